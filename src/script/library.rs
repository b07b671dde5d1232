//! Function libraries (Redis 7 `FUNCTION LOAD`): what a library declares.
//!
//! This module owns [`Library`] and [`Function`], the description of a
//! loaded library that FUNCTION LIST shows and FCALL checks flags against,
//! and [`parse_shebang`], the `#!lua name=<lib>` first line with Redis's
//! errors. Running the library body (`redis.register_function`) is
//! [`super::lua::Vm::load_library`]'s job.

/// A function library as `FUNCTION LOAD` registered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    /// The name from `#!lua name=<name>`.
    pub name: String,
    /// The engine, `"LUA"`.
    pub engine: String,
    /// The functions, in registration order.
    pub functions: Vec<Function>,
}

/// One function of a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// The name FCALL calls it by.
    pub name: String,
    /// `description` of the table form of `redis.register_function`.
    pub description: Option<String>,
    /// Flags in registration order, lower case: `no-writes`, `allow-oom`,
    /// `allow-stale`, `no-cluster`, `allow-cross-slot-keys`.
    pub flags: Vec<String>,
}

/// The flags `redis.register_function` accepts (compared without case).
pub const FLAGS: &[&str] = &[
    "no-writes",
    "allow-oom",
    "allow-stale",
    "no-cluster",
    "allow-cross-slot-keys",
];

/// The text of every invalid library or function name.
pub const NAME_ERROR: &str = "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long";

/// Redis's rule for library and function names: letters, digits and `_`,
/// at least one.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The parsed first line of a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shebang {
    /// The library name.
    pub name: String,
    /// The engine as written (`lua`; compared without case).
    pub engine: String,
    /// Where the body starts: the newline ending the first line, which is
    /// kept so line numbers in errors count the shebang as line 1.
    pub body_start: usize,
}

/// Parse `#!<engine> name=<name>\n`, with `FUNCTION LOAD`'s error texts
/// (without the `ERR ` prefix).
pub fn parse_shebang(code: &[u8]) -> Result<Shebang, String> {
    if !code.starts_with(b"#!") {
        return Err("Missing library metadata".into());
    }
    let Some(end) = code.iter().position(|&c| c == b'\n') else {
        return Err("Invalid library metadata".into());
    };
    let line = String::from_utf8_lossy(&code[..end]);
    let parts: Vec<&str> = line.split_ascii_whitespace().collect();
    let Some(first) = parts.first() else {
        return Err("Invalid library metadata".into());
    };
    let engine = first[2..].to_string();
    let mut name = None;
    for part in &parts[1..] {
        if part.len() >= 5 && part[..5].eq_ignore_ascii_case("name=") {
            if name.is_some() {
                return Err(
                    "Invalid metadata value, name argument was given multiple times".into(),
                );
            }
            name = Some(part[5..].to_string());
            continue;
        }
        return Err(format!("Invalid metadata value given: {part}"));
    }
    let Some(name) = name else {
        return Err("Library name was not given".into());
    };
    if !valid_name(name.as_bytes()) {
        return Err(NAME_ERROR.into());
    }
    if !engine.eq_ignore_ascii_case("lua") {
        return Err(format!("Engine '{engine}' not found"));
    }
    Ok(Shebang {
        name,
        engine,
        body_start: end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_errors() {
        let err = |c: &str| parse_shebang(c.as_bytes()).unwrap_err();
        assert_eq!(err("return 1"), "Missing library metadata");
        assert_eq!(err("#!lua name=x"), "Invalid library metadata");
        assert_eq!(err("#!lua\n"), "Library name was not given");
        assert_eq!(err("#!lua name=a-b\n"), NAME_ERROR);
        assert_eq!(err("#!lua name=\n"), NAME_ERROR);
        assert_eq!(
            err("#!lua name=a foo=b\n"),
            "Invalid metadata value given: foo=b"
        );
        assert_eq!(
            err("#!lua name=a name=b\n"),
            "Invalid metadata value, name argument was given multiple times"
        );
        assert_eq!(err("#!py name=a\n"), "Engine 'py' not found");
        let ok = parse_shebang(b"#!LUA NAME=lib_1\nbody").unwrap();
        assert_eq!((ok.name.as_str(), ok.body_start), ("lib_1", 16));
    }
}
