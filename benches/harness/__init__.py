"""What the benchmarks share: where the built tools and the results are (here), the routing
tables (tables), the lab or the remote hosts (topology), CPU placement and the router CPU's
health (cpu), the generator and the sink (traffic), the agent as a process (agent), and the
written results (results)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "target" / "bench-tools"
RESULTS = ROOT / "benches" / "results"
