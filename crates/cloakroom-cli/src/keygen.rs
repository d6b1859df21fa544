//! `keygen`: a fresh signing key.

use std::io::Write;

use anyhow::Context as _;
use cloakroom::Key;

/// `keygen`: prints a fresh 32-byte key from the OS random source as standard base64
/// (44 characters), the format of `CLOAKROOM_KEYS` and [`Key::from_base64`].
///
/// # Errors
/// When the OS random source fails, and output errors.
pub fn keygen(out: &mut impl Write) -> anyhow::Result<()> {
    let key = Key::try_generate().context("the operating system's random source failed")?;
    writeln!(out, "{}", key.to_base64())?;
    Ok(())
}
