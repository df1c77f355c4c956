//! Why a frame was not forwarded, and what became of the ICMP errors the pipeline wanted
//! to send: one enum each, with a stable name per variant for metrics. The pipeline
//! decides them; the counters count them.

macro_rules! reasons {
    ($(#[$meta:meta])* $ty:ident { $($(#[$doc:meta])* $variant:ident = $name:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $ty {
            $($(#[$doc])* $variant,)*
        }

        impl $ty {
            /// Every variant, in counter order (`variant as usize` is its index).
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// The stable snake_case name, for metrics and logs.
            pub const fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)*
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

reasons! {
    /// Why a frame was not forwarded. The names are part of the metrics API: never rename.
    DropReason {
        /// Shorter than its Ethernet, VLAN or IP header (or the chunk cannot hold the frame).
        Truncated = "truncated",
        /// EtherType neither IPv4 nor IPv6.
        NotIp = "not_ip",
        /// Stacked tags: an 802.1ad / QinQ tag, or a second 802.1Q tag.
        MultipleVlanTags = "multiple_vlan_tags",
        /// No sub-interface for this (port, VLAN), or an unknown ingress port.
        UnknownVlan = "unknown_vlan",
        /// A unicast frame for another station's MAC address.
        OtherHost = "other_host",
        /// Unicast IP in a link-layer broadcast or multicast frame (RFC 1812 section 5.3.4).
        LinkBroadcast = "link_broadcast",
        Ipv4BadVersion = "ipv4_bad_version",
        /// IHL below 5 (RFC 1812 section 5.2.2).
        Ipv4BadHeaderLen = "ipv4_bad_header_len",
        Ipv4BadChecksum = "ipv4_bad_checksum",
        /// Total length below the header or beyond the frame (RFC 1812 section 5.2.2).
        Ipv4BadTotalLen = "ipv4_bad_total_len",
        Ipv6BadVersion = "ipv6_bad_version",
        /// Payload length beyond the frame.
        Ipv6BadPayloadLen = "ipv6_bad_payload_len",
        /// IPv4 0/8, 127/8, 224/4, 240/4 (RFC 1812 section 5.3.7); IPv6 unspecified,
        /// loopback or multicast (RFC 4291 section 2.5.2, 2.5.3, 2.7).
        MartianSource = "martian_source",
        /// IPv4 0/8, 127/8, 240/4; IPv6 unspecified or loopback.
        MartianDestination = "martian_destination",
        /// IPv4 169.254/16 (RFC 3927 section 7) or IPv6 fe80::/10 (RFC 4291 section 2.5.6)
        /// source or destination: never forwarded.
        LinkLocal = "link_local",
        /// 255.255.255.255 (RFC 1812 section 5.3.5.1).
        BroadcastDestination = "broadcast_destination",
        /// The broadcast address of a subnet attached to one of the ports (RFC 1812 section
        /// 5.3.5.2), on a port that does not forward them (the default, RFC 2644). Never
        /// answered with ICMP.
        DirectedBroadcast = "directed_broadcast",
        /// IPv4 224/4 or IPv6 ff00::/8: this engine forwards unicast only.
        MulticastDestination = "multicast_destination",
        /// TTL or hop limit would reach 0 (answered with Time Exceeded).
        TtlExpired = "ttl_expired",
        /// No route (answered with Destination Unreachable, net / no route).
        NoRoute = "no_route",
        /// An unreachable route (answered with host unreachable / reject route).
        Unreachable = "unreachable",
        /// A blackhole route: silent.
        Blackhole = "blackhole",
        /// A route to the router itself: the XDP program should have passed it to the kernel.
        Local = "local",
        /// The route's group or the member's adjacency is gone (a race with the writer).
        NoAdjacency = "no_adjacency",
        /// The adjacency names a port or (port, VLAN) this pipeline has no sub-interface for.
        UnknownEgress = "unknown_egress",
        /// Larger than the egress MTU, DF set or IPv6 (answered with Fragmentation Needed /
        /// Packet Too Big).
        MtuExceeded = "mtu_exceeded",
        /// IPv4 larger than the egress MTU without DF: this engine does not fragment.
        FragmentationNeeded = "fragmentation_needed",
        /// No room in the chunk to push the egress VLAN tag.
        NoHeadroom = "no_headroom",
        /// Strict uRPF (RFC 3704 section 2.2): the source's route does not lead back out of
        /// the ingress sub-interface (no member of its group does), or there is none.
        /// Never answered with ICMP: the source is likely spoofed.
        UrpfStrict = "urpf_strict",
        /// Loose uRPF (RFC 3704 section 2.4): no forwarding route to the source (none, a
        /// blackhole, unreachable or local one, or only the default route when it does not
        /// count). Never answered with ICMP.
        UrpfLoose = "urpf_loose",
        /// A glean route: a host on an attached subnet with no host route yet. Never
        /// flooded; its destination is queued, rate-limited, for the agent to resolve.
        Glean = "glean",
        /// The sending member's source filter (BCP 38) does not hold the source address:
        /// counted per member. Never answered with ICMP.
        MemberSource = "member_source",
    }
}

reasons! {
    /// What became of an ICMP error the pipeline wanted to send. The offending packet is
    /// counted by its `DropReason` whatever the outcome.
    IcmpOutcome {
        /// Built and returned as a `Forward` out of the ingress sub-interface.
        Sent = "icmp_sent",
        /// The ingress port's token bucket was empty.
        RateLimited = "icmp_rate_limited",
        /// The bucket of the offending packet's source address was empty.
        SourceRateLimited = "icmp_source_rate_limited",
        /// The worker's bucket (all its ports) was empty.
        WorkerRateLimited = "icmp_worker_rate_limited",
        /// The ingress sub-interface has no address of the packet's family.
        NoSource = "icmp_no_source",
        /// Never sent in reply to this packet: an ICMP error, a non-initial fragment, an
        /// unparseable IPv6 header chain, or a multicast, broadcast or martian packet.
        Suppressed = "icmp_suppressed",
        /// The chunk has no room to build the error.
        NoRoom = "icmp_no_room",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_names_are_unique_snake_case() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.extend(IcmpOutcome::ALL.iter().map(|o| o.name()));
        for n in &names {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()), "{n}");
        }
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        assert_eq!(DropReason::NotIp.name(), "not_ip");
    }
}
