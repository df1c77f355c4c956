//! `Engine`: the engine's ports, workers and counters, from Python. Arguments become an
//! `EngineConfig` (checked by the core, whose error names the field); counters come back as
//! plain dicts of ints. Start, stop, counters and ports release the GIL.

use corridor_engine::{
    engine::{Engine as CoreEngine, EngineConfig, EngineError as CoreError, PortSpec, PortStatus, MTU_MAX, MTU_MIN},
    pipeline::{IcmpLimits, IcmpRateLimit, SubInterfaceConfig, UrpfMode, UrpfPolicy},
    xdp::{AttachMode, EdgeFilter, XdpMode, MAX_QUEUES},
    xsk::{BindMode, XskMode},
};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::{mac_str, Fib};

create_exception!(_dataplane, EngineError, PyRuntimeError, "The engine could not start, or failed while running or stopping.");

fn engine_err(e: CoreError) -> PyErr {
    if e.is_config() {
        PyValueError::new_err(e.to_string())
    } else {
        EngineError::new_err(e.to_string())
    }
}

fn xsk_mode(m: XskMode) -> &'static str {
    match m {
        XskMode::ZeroCopy => "zero-copy",
        XskMode::Copy => "copy",
    }
}

fn xdp_mode(m: XdpMode) -> &'static str {
    match m {
        XdpMode::Native => "native",
        XdpMode::Generic => "generic",
    }
}

/// An edge filter from its parts; `allowed_macs` is used only with `mac_filter`.
fn edge_filter(field: &str, ethertype_filter: bool, mac_filter: bool, allowed_macs: &[String]) -> PyResult<EdgeFilter> {
    let mut macs = BTreeSet::new();
    for (i, text) in allowed_macs.iter().enumerate() {
        let bad =
            || PyValueError::new_err(format!("{field}.allowed_macs[{i}]: {text:?} is not a unicast MAC such as \"02:00:00:00:00:01\""));
        let parts: Vec<&str> = text.split([':', '-']).collect();
        if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (b, p) in mac.iter_mut().zip(&parts) {
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(bad());
        }
        macs.insert(mac);
    }
    Ok(EdgeFilter { ethertypes: ethertype_filter, macs: mac_filter.then_some(macs) })
}

/// A uRPF policy from its mode's name and allow_default; the error says what `field` takes.
fn urpf_policy(field: &str, mode: &str, allow_default: bool) -> PyResult<UrpfPolicy> {
    let mode = UrpfMode::from_name(mode)
        .ok_or_else(|| PyValueError::new_err(format!("{field}: {mode:?} is not a uRPF mode; use \"strict\", \"loose\" or \"off\"")))?;
    Ok(UrpfPolicy { mode, allow_default })
}

/// One port from its dict: `{"name", "queues"=1, "mtu"=1500, "addresses"={vlan: [ip, ...]},
/// "directed_broadcast"=False, "urpf"={vlan: {"mode": "strict", "allow_default": False}}}`;
/// an address may carry its prefix length ("198.18.0.1/24"), which makes its subnet's
/// directed broadcast known; a uRPF VLAN must be one of `addresses`' (0 when absent).
fn port_spec(i: usize, d: &Bound<'_, PyDict>) -> PyResult<PortSpec> {
    let f = |k: &str| format!("ports[{i}].{k}");
    let name: String = d.get_item("name")?.ok_or_else(|| PyValueError::new_err(format!("{}: missing", f("name"))))?.extract()?;
    let mut spec = PortSpec::new(name);
    if let Some(q) = d.get_item("queues")? {
        let q: i64 = q.extract().map_err(|_| PyValueError::new_err(format!("{}: expected an integer", f("queues"))))?;
        // Out of u32 range: 0 makes the core's range check name the field and the limits.
        spec.queues =
            u32::try_from(q).map_err(|_| PyValueError::new_err(format!("{}: {q} is not between 1 and {MAX_QUEUES}", f("queues"))))?;
    }
    if let Some(m) = d.get_item("mtu")? {
        let m: i64 = m.extract().map_err(|_| PyValueError::new_err(format!("{}: expected an integer", f("mtu"))))?;
        spec.mtu = u16::try_from(m).map_err(|_| {
            PyValueError::new_err(format!(
                "{}: {m} is not between {MTU_MIN} (the IPv6 minimum, RFC 8200 section 5) and {MTU_MAX}",
                f("mtu")
            ))
        })?;
    }
    if let Some(b) = d.get_item("directed_broadcast")? {
        spec.directed_broadcast =
            b.extract().map_err(|_| PyValueError::new_err(format!("{}: expected a bool", f("directed_broadcast"))))?;
    }
    if let Some(a) = d.get_item("addresses")? {
        let a: BTreeMap<i64, Vec<String>> =
            a.extract().map_err(|_| PyValueError::new_err(format!("{}: expected {{vlan: [address, ...]}}", f("addresses"))))?;
        spec.sub_interfaces = Vec::new();
        for (vlan, addrs) in a {
            let bad = |m: String| PyValueError::new_err(format!("{}: VLAN {vlan}: {m}", f("addresses")));
            let vlan16 = u16::try_from(vlan)
                .ok()
                .filter(|v| *v <= 4094)
                .ok_or_else(|| PyValueError::new_err(format!("{}: VLAN {vlan} is not between 0 (untagged) and 4094", f("addresses"))))?;
            let mut s = SubInterfaceConfig::new(vlan16, None, None);
            for text in addrs {
                let (bare, len) = match text.split_once('/') {
                    Some((a, l)) => (a, Some(l)),
                    None => (text.as_str(), None),
                };
                // One address per family: it is the source of the ICMP errors sent there.
                match bare.parse::<IpAddr>() {
                    Ok(IpAddr::V4(v)) => {
                        if let Some(old) = s.ipv4.replace(v) {
                            return Err(bad(format!("two IPv4 addresses ({old}, {v}); a sub-interface has at most one per family")));
                        }
                        if let Some(l) = len {
                            s.ipv4_prefix_len = l
                                .parse::<u8>()
                                .ok()
                                .filter(|l| *l <= 32)
                                .ok_or_else(|| bad(format!("{text:?}: prefix length {l:?} is not between 0 and 32")))?;
                        }
                    }
                    Ok(IpAddr::V6(v)) => {
                        if let Some(old) = s.ipv6.replace(v) {
                            return Err(bad(format!("two IPv6 addresses ({old}, {v}); a sub-interface has at most one per family")));
                        }
                    }
                    Err(_) => return Err(bad(format!("{text:?} is not an IP address"))),
                }
            }
            spec.sub_interfaces.push(s);
        }
    }
    if let Some(u) = d.get_item("urpf")? {
        let u: BTreeMap<i64, Bound<'_, PyDict>> = u
            .extract()
            .map_err(|_| PyValueError::new_err(format!("{}: expected {{vlan: {{\"mode\": ..., \"allow_default\": ...}}}}", f("urpf"))))?;
        for (vlan, policy) in u {
            let field = format!("{}[{vlan}]", f("urpf"));
            let mode: String = match policy.get_item("mode")? {
                Some(m) => m.extract().map_err(|_| PyValueError::new_err(format!("{field}.mode: expected a string")))?,
                None => return Err(PyValueError::new_err(format!("{field}.mode: missing"))),
            };
            let allow_default: bool = match policy.get_item("allow_default")? {
                Some(a) => a.extract().map_err(|_| PyValueError::new_err(format!("{field}.allow_default: expected a bool")))?,
                None => false,
            };
            let policy = urpf_policy(&format!("{field}.mode"), &mode, allow_default)?;
            let sub = spec.sub_interfaces.iter_mut().find(|s| i64::from(s.vlan) == vlan).ok_or_else(|| {
                PyValueError::new_err(format!("{field}: VLAN {vlan} is not one of this port's sub-interfaces (see addresses)"))
            })?;
            sub.urpf = policy;
        }
    }
    if let Some(e) = d.get_item("edge")? {
        let e: BTreeMap<i64, Bound<'_, PyDict>> = e.extract().map_err(|_| {
            PyValueError::new_err(format!(
                "{}: expected {{vlan: {{\"ethertype_filter\": ..., \"mac_filter\": ..., \"allowed_macs\": [...]}}}}",
                f("edge")
            ))
        })?;
        for (vlan, policy) in e {
            let field = format!("{}[{vlan}]", f("edge"));
            let flag = |key: &str| -> PyResult<bool> {
                match policy.get_item(key)? {
                    Some(v) => v.extract().map_err(|_| PyValueError::new_err(format!("{field}.{key}: expected a bool"))),
                    None => Ok(false),
                }
            };
            let macs: Vec<String> = match policy.get_item("allowed_macs")? {
                Some(v) => v.extract().map_err(|_| PyValueError::new_err(format!("{field}.allowed_macs: expected a list of strings")))?,
                None => Vec::new(),
            };
            let filter = edge_filter(&field, flag("ethertype_filter")?, flag("mac_filter")?, &macs)?;
            let vlan16 = u16::try_from(vlan).ok().filter(|v| spec.sub_interfaces.iter().any(|s| s.vlan == *v)).ok_or_else(|| {
                PyValueError::new_err(format!("{field}: VLAN {vlan} is not one of this port's sub-interfaces (see addresses)"))
            })?;
            spec.edge.push((vlan16, filter));
        }
    }
    Ok(spec)
}

fn status_dict<'py>(py: Python<'py>, p: &PortStatus) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &p.name)?;
    d.set_item("ifindex", p.ifindex)?;
    d.set_item("mac", mac_str(p.mac))?;
    d.set_item("queues", p.queues)?;
    d.set_item("mode", xsk_mode(p.socket_mode))?;
    d.set_item("xdp_mode", xdp_mode(p.xdp_mode))?;
    d.set_item("mtu", p.mtu)?;
    d.set_item("link_up", p.link_up)?;
    d.set_item("recoveries", p.recoveries)?;
    Ok(d)
}

/// The engine over a `Fib`: `start()` attaches to the ports and runs the workers, which read
/// the FIB lock-free while `Fib.apply` changes it.
#[pyclass(module = "corridor._dataplane", frozen)]
pub struct Engine {
    fib: Py<Fib>,
    config: EngineConfig,
    running: Mutex<Option<CoreEngine>>,
    /// The last counters and ports before `stop`, so that they stay readable.
    last: Mutex<Option<(corridor_engine::engine::EngineCounters, Vec<PortStatus>)>>,
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (fib, *, ports, workers=None, netns=None, busy_poll=false, bind_mode="auto", attach_mode="auto",
        icmp_rate=1000, icmp_burst=100, icmp_source_rate=1, icmp_source_burst=6, icmp_sources=4096, icmp_worker_rate=1000,
        icmp_worker_burst=50, pin_cpus=false, frames_per_worker=None, frame_size=2048, realtime_priority=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        fib: Py<Fib>,
        ports: Vec<Bound<'_, PyDict>>,
        workers: Option<usize>,
        netns: Option<String>,
        busy_poll: bool,
        bind_mode: &str,
        attach_mode: &str,
        icmp_rate: u32,
        icmp_burst: u32,
        icmp_source_rate: u32,
        icmp_source_burst: u32,
        icmp_sources: usize,
        icmp_worker_rate: u32,
        icmp_worker_burst: u32,
        pin_cpus: bool,
        frames_per_worker: Option<u32>,
        frame_size: u32,
        realtime_priority: Option<i64>,
    ) -> PyResult<Self> {
        let realtime_priority = realtime_priority
            .map(|p| {
                u8::try_from(p).map_err(|_| PyValueError::new_err(format!("realtime_priority: {p} is not a SCHED_FIFO priority (1 to 99)")))
            })
            .transpose()?;
        let bind_mode = match bind_mode {
            "auto" => BindMode::Auto,
            "copy" => BindMode::Copy,
            "zero-copy" | "zerocopy" => BindMode::ZeroCopy,
            o => return Err(PyValueError::new_err(format!("bind_mode: {o:?} is not \"auto\", \"copy\" or \"zero-copy\""))),
        };
        let attach_mode = match attach_mode {
            "auto" => AttachMode::Auto,
            "native" => AttachMode::Native,
            "generic" => AttachMode::Generic,
            o => return Err(PyValueError::new_err(format!("attach_mode: {o:?} is not \"auto\", \"native\" or \"generic\""))),
        };
        let ports = ports.iter().enumerate().map(|(i, d)| port_spec(i, d)).collect::<PyResult<Vec<_>>>()?;
        let config = EngineConfig {
            ports,
            workers,
            pin_cpus,
            busy_poll,
            realtime_priority,
            bind_mode,
            attach_mode,
            frames_per_worker,
            frame_size,
            icmp_rate_limit: IcmpRateLimit { per_second: icmp_rate, burst: icmp_burst },
            icmp_limits: IcmpLimits {
                per_source: IcmpRateLimit { per_second: icmp_source_rate, burst: icmp_source_burst },
                sources: icmp_sources,
                per_worker: IcmpRateLimit { per_second: icmp_worker_rate, burst: icmp_worker_burst },
            },
            netns,
            ..EngineConfig::default()
        };
        config.validate().map_err(engine_err)?;
        Ok(Engine { fib, config, running: Mutex::new(None), last: Mutex::new(None) })
    }

    /// Attaches, opens the sockets and starts the workers; returns once they forward.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let workers = self.config.worker_count().map_err(engine_err)?;
        let fib = self.fib.get();
        let readers = fib.with(py, |f| (0..workers).map(|_| f.reader()).collect::<Vec<_>>());
        let config = self.config.clone();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.is_some() {
            return Err(EngineError::new_err("the engine is already running"));
        }
        let engine = py.detach(|| CoreEngine::start(config, readers)).map_err(engine_err)?;
        *running = Some(engine);
        Ok(())
    }

    /// Stops the workers and detaches from the ports. Calling it again does nothing.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self.running.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut engine) = taken else { return Ok(()) };
        let (counters, ports, result) = py.detach(|| {
            let c = engine.counters();
            let p = engine.ports();
            (c, p, engine.stop())
        });
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((counters, ports));
        result.map_err(engine_err)
    }

    /// New ICMP error limits for the running workers, in force within a few milliseconds
    /// (each takes them at its next pass); the defaults are `new`'s. `icmp_sources`, the
    /// per-source table's size, is fixed at start. Raises EngineError when not running.
    #[pyo3(signature = (*, icmp_rate=1000, icmp_burst=100, icmp_source_rate=1, icmp_source_burst=6,
        icmp_worker_rate=1000, icmp_worker_burst=50))]
    fn set_icmp_limits(
        &self,
        icmp_rate: u32,
        icmp_burst: u32,
        icmp_source_rate: u32,
        icmp_source_burst: u32,
        icmp_worker_rate: u32,
        icmp_worker_burst: u32,
    ) -> PyResult<()> {
        let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let engine = g.as_ref().ok_or_else(|| EngineError::new_err("the engine is not running"))?;
        engine.set_icmp_limits(
            IcmpRateLimit { per_second: icmp_rate, burst: icmp_burst },
            IcmpRateLimit { per_second: icmp_source_rate, burst: icmp_source_burst },
            IcmpRateLimit { per_second: icmp_worker_rate, burst: icmp_worker_burst },
        );
        Ok(())
    }

    /// Sets each port's sFlow sampling rate, in the order of the ports: 1 in N frames
    /// received on it is sampled, 0 turns it off. In force at each worker's next batch.
    /// Raises ValueError (nothing changed) for a wrong count or a rate out of range, and
    /// EngineError when not running.
    fn set_sample_rates(&self, py: Python<'_>, rates: Vec<i64>) -> PyResult<()> {
        let max = corridor_engine::pipeline::sample::SAMPLE_RATE_MAX;
        let mut checked = Vec::with_capacity(rates.len());
        for (i, r) in rates.iter().enumerate() {
            let r = u32::try_from(*r)
                .ok()
                .filter(|r| *r <= max)
                .ok_or_else(|| PyValueError::new_err(format!("sample_rates[{i}]: {r} is not between 0 (off) and {max}")))?;
            checked.push(r);
        }
        py.detach(|| {
            let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let engine = g.as_ref().ok_or_else(|| EngineError::new_err("the engine is not running"))?;
            engine.set_sample_rates(&checked).map_err(engine_err)
        })
    }

    /// The frames the workers sampled since the last call, at most `max`, each a dict:
    /// port (ingress index), vlan, member (id, UNKNOWN_MEMBER, or None on a sub-interface
    /// without members), frame_len, pool (frames its worker saw on the port so far),
    /// out_port, out_vlan, out_priority (egress index and the tag it left with, 0 untagged;
    /// None when dropped), dropped (the drop reason's name or
    /// None), icmp_sent, header (bytes: the first 128 octets as received). Empty when not
    /// running. Never blocks on a worker.
    #[pyo3(signature = (max=4096))]
    fn drain_samples<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyList>> {
        use corridor_engine::pipeline::SampleOutcome;
        let samples = py.detach(|| {
            let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
            g.as_ref().map(|e| e.drain_samples(max)).unwrap_or_default()
        });
        let out = PyList::empty(py);
        for s in samples {
            let d = PyDict::new(py);
            d.set_item("port", s.port)?;
            d.set_item("vlan", s.vlan)?;
            d.set_item("member", (s.member != corridor_engine::fib::NO_MEMBER).then_some(s.member))?;
            d.set_item("frame_len", s.frame_len)?;
            d.set_item("pool", s.pool)?;
            let (out_port, out_vlan, out_priority, dropped, icmp) = match s.outcome {
                SampleOutcome::Forwarded { port, vlan, priority } => (Some(port), Some(vlan), Some(priority), None, false),
                SampleOutcome::Dropped { reason, icmp_sent } => (None, None, None, Some(reason.name()), icmp_sent),
            };
            d.set_item("out_port", out_port)?;
            d.set_item("out_vlan", out_vlan)?;
            d.set_item("out_priority", out_priority)?;
            d.set_item("dropped", dropped)?;
            d.set_item("icmp_sent", icmp)?;
            d.set_item("header", pyo3::types::PyBytes::new(py, &s.header))?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// Per port, in the order of the ports: rate, pool (frames seen by the samplers, up to
    /// each worker's last sample), sampled, dropped (samples lost to a full ring), summed
    /// over workers. Empty when not running.
    fn sample_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let stats = py.detach(|| {
            let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
            g.as_ref().map(|e| e.sample_stats()).unwrap_or_default()
        });
        let out = PyList::empty(py);
        for s in stats {
            let d = PyDict::new(py);
            d.set_item("rate", s.rate)?;
            d.set_item("pool", s.pool)?;
            d.set_item("sampled", s.sampled)?;
            d.set_item("dropped", s.dropped)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// Sets the uRPF check of sub-interface (`port` by name, `vlan`): `mode` "strict",
    /// "loose" or "off"; every worker checks by it from its next frame on. Raises
    /// ValueError for an unknown port, VLAN or mode, EngineError when not running.
    #[pyo3(signature = (port, vlan, mode, *, allow_default=false))]
    fn set_urpf(&self, port: &str, vlan: u16, mode: &str, allow_default: bool) -> PyResult<()> {
        let policy = urpf_policy("mode", mode, allow_default)?;
        let index = self
            .config
            .ports
            .iter()
            .position(|p| p.name == port)
            .ok_or_else(|| PyValueError::new_err(format!("port: {port:?} is not one of the engine's ports")))?;
        if !self.config.ports[index].sub_interfaces.iter().any(|s| s.vlan == vlan) {
            return Err(PyValueError::new_err(format!("vlan: port {port} has no sub-interface with VLAN {vlan}")));
        }
        let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let engine = g.as_ref().ok_or_else(|| EngineError::new_err("the engine is not running"))?;
        engine.set_urpf(index, vlan, policy).map_err(engine_err)
    }

    /// Sets the XDP program's edge filter of sub-interface (`port` by name, `vlan`): only
    /// IPv4, IPv6 and ARP with `ethertype_filter`; only `allowed_macs` as source with
    /// `mac_filter`. In force for the next frame, the kernel's included. Raises ValueError
    /// for an unknown port or VLAN or a bad MAC, EngineError when not running or the
    /// program's maps are full (the old filter stays).
    #[pyo3(signature = (port, vlan, *, ethertype_filter=false, mac_filter=false, allowed_macs=Vec::new()))]
    fn set_edge(
        &self,
        py: Python<'_>,
        port: &str,
        vlan: u16,
        ethertype_filter: bool,
        mac_filter: bool,
        allowed_macs: Vec<String>,
    ) -> PyResult<()> {
        let filter = edge_filter("filter", ethertype_filter, mac_filter, &allowed_macs)?;
        let index = self
            .config
            .ports
            .iter()
            .position(|p| p.name == port)
            .ok_or_else(|| PyValueError::new_err(format!("port: {port:?} is not one of the engine's ports")))?;
        if !self.config.ports[index].sub_interfaces.iter().any(|s| s.vlan == vlan) {
            return Err(PyValueError::new_err(format!("vlan: port {port} has no sub-interface with VLAN {vlan}")));
        }
        py.detach(|| {
            let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let engine = g.as_ref().ok_or_else(|| CoreError::Thread("the engine is not running".into()))?;
            engine.set_edge(index, vlan, filter)
        })
        .map_err(engine_err)
    }

    /// The edge filters in force (only sub-interfaces that have one): `[{"port", "vlan",
    /// "ethertype_filter", "mac_filter", "allowed_macs"}]`; empty when not running.
    fn edge<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let filters = py.detach(|| self.running.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|e| e.edge()).unwrap_or_default());
        let list = PyList::empty(py);
        for (port, vlan, f) in filters {
            let d = PyDict::new(py);
            d.set_item("port", self.config.ports.get(port).map(|p| p.name.as_str()).unwrap_or(""))?;
            d.set_item("vlan", vlan)?;
            d.set_item("ethertype_filter", f.ethertypes)?;
            d.set_item("mac_filter", f.macs.is_some())?;
            let macs: Vec<String> = f.macs.iter().flatten().map(|m| mac_str(*m)).collect();
            d.set_item("allowed_macs", macs)?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// The source MACs the edge filters refused lately, most recent first (the program
    /// keeps 256): `[{"port", "vlan", "mac", "packets", "age_seconds"}]`, the age from the
    /// last refused frame to now.
    fn refused_macs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let refused =
            py.detach(|| self.running.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|e| e.refused_macs()).unwrap_or_default());
        let list = PyList::empty(py);
        for (port, r) in refused {
            let d = PyDict::new(py);
            d.set_item("port", self.config.ports.get(port).map(|p| p.name.as_str()).unwrap_or(""))?;
            d.set_item("vlan", r.vlan)?;
            d.set_item("mac", mac_str(r.mac))?;
            d.set_item("packets", r.packets)?;
            d.set_item("age_seconds", r.age_ns as f64 / 1e9)?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// Every sub-interface's uRPF policy in force: `[{"port", "vlan", "mode",
    /// "allow_default"}]`; as configured when the engine is not running.
    fn urpf<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let policies: Vec<(usize, u16, UrpfPolicy)> = match self.running.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(e) => e.urpf(),
            None => {
                self.config.ports.iter().enumerate().flat_map(|(i, p)| p.sub_interfaces.iter().map(move |s| (i, s.vlan, s.urpf))).collect()
            }
        };
        let list = PyList::empty(py);
        for (port, vlan, policy) in policies {
            let d = PyDict::new(py);
            d.set_item("port", self.config.ports.get(port).map(|p| p.name.as_str()).unwrap_or(""))?;
            d.set_item("vlan", vlan)?;
            d.set_item("mode", policy.mode.name())?;
            d.set_item("allow_default", policy.allow_default)?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// The destinations the workers dropped as `glean` and queued for resolution since the
    /// last call (de-duplicated and rate-limited per worker), at most `max`, as address
    /// strings. Empty when not running. Never blocks on a worker.
    #[pyo3(signature = (max=256))]
    fn drain_glean(&self, py: Python<'_>, max: usize) -> Vec<String> {
        py.detach(|| {
            let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
            g.as_ref().map(|e| e.drain_glean(max).iter().map(|a| a.to_string()).collect()).unwrap_or_default()
        })
    }

    /// What became of the destinations of `glean` drops, summed over workers: queued,
    /// deduplicated, rate_limited, full. Zeros when not running.
    fn glean_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| {
            let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
            g.as_ref().map(|e| e.glean_stats()).unwrap_or_default()
        });
        let d = PyDict::new(py);
        d.set_item("queued", s.queued)?;
        d.set_item("deduplicated", s.deduplicated)?;
        d.set_item("rate_limited", s.rate_limited)?;
        d.set_item("full", s.full)?;
        Ok(d)
    }

    /// True between `start` and `stop`.
    #[getter]
    fn running(&self) -> bool {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Frames the blackhole route of counter slot `slot` (`Fib.blackhole_slot`) dropped;
    /// 0 when the engine is not running.
    fn blackhole_dropped(&self, py: Python<'_>, slot: u32) -> u64 {
        py.detach(|| self.running.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, |e| e.blackhole_dropped(slot)))
    }

    /// The ports: name, ifindex, mac, queues, mode ("zero-copy"/"copy"), xdp_mode
    /// ("native"/"generic"), mtu, link_up, recoveries.
    fn ports<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let ports = py.detach(|| {
            let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
            match g.as_ref() {
                Some(e) => e.ports(),
                None => self.last.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|l| l.1.clone()).unwrap_or_default(),
            }
        });
        let list = PyList::empty(py);
        for p in &ports {
            let d = status_dict(py, p)?;
            if self.running.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
                d.set_item("link_up", false)?;
            }
            list.append(d)?;
        }
        Ok(list)
    }

    /// Every counter: drops and icmp by name (summed over workers), ports (one entry per
    /// sub-interface: port index, name, vlan, rx/tx packets and bytes), workers (each with
    /// its drops, its drops by ingress port name then reason, tx_ring_full, passes), accounting (per worker), xsk (per socket), steering.
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = py.detach(|| {
            let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
            match g.as_ref() {
                Some(e) => Some(e.counters()),
                None => self.last.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|l| l.0.clone()),
            }
        });
        let d = PyDict::new(py);
        let Some(c) = c else {
            d.set_item("drops", PyDict::new(py))?;
            d.set_item("icmp", PyDict::new(py))?;
            for k in ["ports", "workers", "accounting", "xsk"] {
                d.set_item(k, PyList::empty(py))?;
            }
            d.set_item("steering", PyDict::new(py))?;
            d.set_item("edge", PyDict::new(py))?;
            d.set_item("members", PyDict::new(py))?;
            d.set_item("tx_ring_full", 0)?;
            return Ok(d);
        };
        let reasons = |snap: &corridor_engine::counters::CounterSnapshot| -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
            let drops = PyDict::new(py);
            for r in corridor_engine::pipeline::DropReason::ALL {
                drops.set_item(r.name(), snap.drop_count(*r))?;
            }
            let icmp = PyDict::new(py);
            for o in corridor_engine::pipeline::IcmpOutcome::ALL {
                icmp.set_item(o.name(), snap.icmp_count(*o))?;
            }
            Ok((drops, icmp))
        };
        let (drops, icmp) = reasons(&c.total)?;
        d.set_item("drops", drops)?;
        d.set_item("icmp", icmp)?;
        let ports = PyList::empty(py);
        for (i, (port, vlan)) in c.sub_interfaces.iter().enumerate() {
            let s = c.total.sub_interfaces.get(i).cloned().unwrap_or_default();
            let e = PyDict::new(py);
            e.set_item("port", port)?;
            e.set_item("name", self.config.ports.get(*port).map(|p| p.name.as_str()).unwrap_or(""))?;
            e.set_item("vlan", vlan)?;
            e.set_item("rx_packets", s.rx_packets)?;
            e.set_item("rx_bytes", s.rx_bytes)?;
            e.set_item("tx_packets", s.tx_packets)?;
            e.set_item("tx_bytes", s.tx_bytes)?;
            ports.append(e)?;
        }
        d.set_item("ports", ports)?;
        // By member id (UNKNOWN_MEMBER for unknown source MACs), summed over workers; only
        // rows with something counted, and only the drop reasons seen.
        let members = PyDict::new(py);
        for (id, m) in c.total.members.iter().enumerate() {
            if m.is_zero() {
                continue;
            }
            let e = PyDict::new(py);
            e.set_item("rx_packets", m.rx_packets)?;
            e.set_item("rx_bytes", m.rx_bytes)?;
            e.set_item("tx_packets", m.tx_packets)?;
            e.set_item("tx_bytes", m.tx_bytes)?;
            let drops = PyDict::new(py);
            for r in corridor_engine::pipeline::DropReason::ALL {
                let n = m.drop_count(*r);
                if n > 0 {
                    drops.set_item(r.name(), n)?;
                }
            }
            e.set_item("drops", drops)?;
            members.set_item(id, e)?;
        }
        d.set_item("members", members)?;
        let workers = PyList::empty(py);
        let accounting = PyList::empty(py);
        for (i, w) in c.workers.iter().enumerate() {
            let (wd, wi) = reasons(&w.forwarding)?;
            let e = PyDict::new(py);
            e.set_item("worker", i)?;
            e.set_item("drops", wd)?;
            // By ingress port name, then reason name; "" for frames of no known port, when
            // there were any.
            let port_drops = PyDict::new(py);
            for (index, row) in w.forwarding.port_drops.iter().enumerate() {
                let name = match self.config.ports.get(index) {
                    Some(p) => p.name.as_str(),
                    None if row.iter().any(|&n| n > 0) => "",
                    None => continue,
                };
                let reasons = PyDict::new(py);
                for r in corridor_engine::pipeline::DropReason::ALL {
                    reasons.set_item(r.name(), row[*r as usize])?;
                }
                port_drops.set_item(name, reasons)?;
            }
            e.set_item("port_drops", port_drops)?;
            e.set_item("icmp", wi)?;
            e.set_item("rx_packets", w.forwarding.sub_interfaces.iter().map(|s| s.rx_packets).sum::<u64>())?;
            e.set_item("tx_packets", w.forwarding.sub_interfaces.iter().map(|s| s.tx_packets).sum::<u64>())?;
            e.set_item("tx_ring_full", w.tx_ring_full)?;
            e.set_item("passes", w.passes)?;
            workers.append(e)?;
            let a = PyDict::new(py);
            let fa = &w.accounting;
            for (k, v) in [
                ("total", fa.total),
                ("free", fa.free),
                ("fill", fa.fill),
                ("rx", fa.rx),
                ("tx", fa.tx),
                ("completion", fa.completion),
                ("held", fa.held),
            ] {
                a.set_item(k, v)?;
            }
            accounting.append(a)?;
        }
        d.set_item("workers", workers)?;
        d.set_item("accounting", accounting)?;
        let xsk = PyList::empty(py);
        for s in &c.sockets {
            let e = PyDict::new(py);
            e.set_item("worker", s.worker)?;
            e.set_item("port", s.port)?;
            e.set_item("queue", s.queue)?;
            e.set_item("mode", xsk_mode(s.mode))?;
            let st = PyDict::new(py);
            let x = &s.statistics;
            for (k, v) in [
                ("rx_dropped", x.rx_dropped),
                ("rx_invalid_descs", x.rx_invalid_descs),
                ("tx_invalid_descs", x.tx_invalid_descs),
                ("rx_ring_full", x.rx_ring_full),
                ("rx_fill_ring_empty_descs", x.rx_fill_ring_empty_descs),
                ("tx_ring_empty_descs", x.tx_ring_empty_descs),
            ] {
                st.set_item(k, v)?;
            }
            e.set_item("statistics", st)?;
            xsk.append(e)?;
        }
        d.set_item("xsk", xsk)?;
        let steering = PyDict::new(py);
        steering.set_item("steered", c.steering.steered)?;
        steering.set_item("passed", c.steering.passed)?;
        steering.set_item("no_socket", c.steering.no_socket)?;
        d.set_item("steering", steering)?;
        let edge = PyDict::new(py);
        for (port, e) in self.config.ports.iter().zip(&c.edge) {
            let p = PyDict::new(py);
            p.set_item("foreign_ethertype", e.foreign_ethertype)?;
            p.set_item("unknown_source_mac", e.unknown_source_mac)?;
            edge.set_item(&port.name, p)?;
        }
        d.set_item("edge", edge)?;
        d.set_item("tx_ring_full", c.tx_ring_full)?;
        Ok(d)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    m.add("EngineError", m.py().get_type::<EngineError>())?;
    Ok(())
}
