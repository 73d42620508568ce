//! Random bytes from the kernel, for bypass secrets and signing keys: never
//! a silent fallback to something guessable.

/// `N` random bytes from `getrandom(2)`.
///
/// # Panics
///
/// Only if the kernel cannot give random bytes at all (a kernel without
/// `getrandom`), where no secret could be made safely.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                panic!("the kernel gives no random bytes (getrandom: {e}); no secret can be made")
            }
        }
    }
    buf
}

/// `N` random bytes as lowercase hex.
pub fn hex<const N: usize>() -> String {
    crate::hex::encode(&bytes::<N>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_differ_between_calls() {
        assert_ne!(super::bytes::<16>(), super::bytes::<16>());
        assert_eq!(super::hex::<16>().len(), 32);
    }
}
