//! Errno names a scenario may expect, recognised in busybox's messages
//! (which end in glibc's strerror text, the same on host and guest).

/// The errnos livepatch operations return, by name.
const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("ENOENT", libc::ENOENT),
    ("ESRCH", libc::ESRCH),
    ("EIO", libc::EIO),
    ("E2BIG", libc::E2BIG),
    ("ENOEXEC", libc::ENOEXEC),
    ("EAGAIN", libc::EAGAIN),
    ("ENOMEM", libc::ENOMEM),
    ("EFAULT", libc::EFAULT),
    ("EBUSY", libc::EBUSY),
    ("EEXIST", libc::EEXIST),
    ("ENODEV", libc::ENODEV),
    ("EINVAL", libc::EINVAL),
    ("ENOSPC", libc::ENOSPC),
    ("ENOSYS", libc::ENOSYS),
    ("ENOTSUPP", 524),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("ETIMEDOUT", libc::ETIMEDOUT),
    ("EKEYREJECTED", libc::EKEYREJECTED),
];

pub fn names() -> impl Iterator<Item = &'static str> {
    ERRNOS.iter().map(|(name, _)| *name)
}

/// The static name of a known errno (fixture specs hold owned strings).
pub fn canonical(name: &str) -> &'static str {
    names()
        .find(|known| *known == name)
        .unwrap_or("an unknown errno")
}

pub fn is_known(name: &str) -> bool {
    number(name).is_some()
}

/// The errno number of a name such as EINVAL.
pub fn number(name: &str) -> Option<i32> {
    ERRNOS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, number)| *number)
}

fn description(number: i32) -> String {
    let text = std::io::Error::from_raw_os_error(number).to_string();
    // "Invalid argument (os error 22)" ──> "Invalid argument"
    text.rsplit_once(" (os error")
        .map_or(text.clone(), |(head, _)| head.to_string())
}

/// How busybox words some errnos instead of strerror(): its sh when a
/// redirection fails, and its module tools (modutils.c, moderror()).
const BUSYBOX_WORDS: &[(&str, &str)] = &[
    (": nonexistent directory", "ENOENT"),
    ("invalid module format", "ENOEXEC"),
    ("unknown symbol in module, or unknown parameter", "ENOENT"),
    ("module has wrong symbol version", "ESRCH"),
    ("kernel does not support requested operation", "ENOSYS"),
];

/// The errno whose description ends the last line of `output`, e.g.
/// "insmod: can't insert 'x.ko': Invalid argument" ──> EINVAL.
pub fn from_message(output: &str) -> Option<&'static str> {
    let last = output
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())?
        .trim_end();
    if let Some((_, name)) = BUSYBOX_WORDS
        .iter()
        .find(|(words, _)| last.ends_with(words))
    {
        return Some(name);
    }
    ERRNOS
        .iter()
        .find(|(_, number)| last.ends_with(&description(*number)))
        .map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_messages_map_to_errno_names() {
        assert_eq!(
            from_message("insmod: can't insert '/klp/a.ko': Invalid argument\n"),
            Some("EINVAL")
        );
        assert_eq!(
            from_message("sh: write error: Device or resource busy"),
            Some("EBUSY")
        );
        assert_eq!(
            from_message("insmod: can't insert 'b.ko': No such device\n"),
            Some("ENODEV")
        );
        assert_eq!(
            from_message("sh: can't create /sys/kernel/livepatch/a/enabled: nonexistent directory"),
            Some("ENOENT")
        );
        assert_eq!(
            from_message("insmod: can't insert '/klp/klp_target.ko': invalid module format"),
            Some("ENOEXEC")
        );
        assert_eq!(from_message("all fine"), None);
    }
}
