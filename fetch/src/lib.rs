//! The provider client shared by the init and `phase verify`.
//!
//! A booting machine fetches under rules a browser does not follow
//! (SECURITY.md rows 9–12): bodies are hashed exactly as stored, so no
//! content decoding is asked for and any `Content-Encoding` is refused;
//! redirects are followed by hand, at most [`Config::max_redirects`], and
//! never from https to http; every read is bounded by a cap the caller gives
//! (the manifest's size cap, an artifact's declared size); and each phase has
//! a deadline — connect, first byte, silence between bytes — plus a minimum
//! throughput, so a mirror that trickles one byte a second is dropped within
//! its budget and the next mirror gets its turn.
#![forbid(unsafe_code)]

mod client;
mod url;

pub use client::{Client, Config, FetchError, MinRate, Roots, Transfer};
pub use url::{join, resolve};
