//! Service discovery beyond static `targets`: Consul ([`consul`]) publishes each discovered
//! service's instances into its pool's [`MembershipFeed`](crate::upstream::MembershipFeed);
//! the pool (in [`upstream`](crate::upstream)) does the rest.

pub mod consul;
