//! The `phase` host tools as a library, so `cargo xtask` can publish a tree
//! and start a provider in-process:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn demo(release: &phase_tools::publish::Release, key: ed25519_dalek::SigningKey) -> anyhow::Result<()> {
//! let tree = std::path::Path::new("target/provider");
//! phase_tools::publish::publish(release, &[key], tree, false)?;
//! let server = phase_tools::serve::Server::bind(
//!     tree,
//!     "127.0.0.1:0".parse()?,
//!     None,
//!     Arc::new(|line| eprintln!("{line}")),
//! )?
//! .spawn();
//! println!("guests fetch from http://10.0.2.2:{}/", server.addr().port());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod announce;
pub mod formats;
pub mod kconfig;
pub mod keys;
pub mod nginx;
pub mod publish;
pub mod secureboot;
pub mod serve;
#[cfg(feature = "test-ca")]
pub mod testca;
pub mod testdata;
pub mod testnet;
pub mod time;
pub mod verify;
