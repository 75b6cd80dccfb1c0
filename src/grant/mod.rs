//! The privilege path, in one place: what a user's grant allows
//! ([`policy`]), the helper that carries out one allowed change as root
//! ([`helper`]), and the daemon's side that asks for changes, directly when
//! it is root and through `sudo banger-helper` when it is not ([`netadmin`]).

pub mod helper;
pub mod netadmin;
pub mod policy;

pub use netadmin::{NetAdmin, NetAdminError};
pub use policy::{GrantError, GrantFile, GuestList, Policy, Request};
