//! Hand-written matchers (no regex): secret-looking names, credential patterns in values, image
//! references, container runtime sockets.

/// Byte normalisation for name matching: ASCII upper case, `-` and `.` read as `_`.
fn norm(b: u8) -> u8 {
    match b {
        b'-' | b'.' => b'_',
        _ => b.to_ascii_uppercase(),
    }
}

const SECRET_WORDS: &[&[u8]] = &[
    b"PASSWORD",
    b"PASSWD",
    b"PASSPHRASE",
    b"SECRET",
    b"TOKEN",
    b"CREDENTIAL",
    b"API_KEY",
    b"APIKEY",
    b"ACCESS_KEY",
    b"ACCESSKEY",
    b"PRIVATE_KEY",
    b"PRIVATEKEY",
    b"AUTH_KEY",
    b"SIGNING_KEY",
    b"ENCRYPTION_KEY",
    b"MASTER_KEY",
];

/// Names that mention a secret but hold something else (a path, a reference, a setting).
const NOT_SECRET_SUFFIXES: &[&[u8]] = &[
    b"_FILE",
    b"_PATH",
    b"_DIR",
    b"_NAME",
    b"_REF",
    b"_URL",
    b"_URI",
    b"_ENDPOINT",
    b"_TTL",
    b"_TIMEOUT",
    b"_EXPIRY",
    b"_EXPIRATION",
    b"_LENGTH",
    b"_SIZE",
    b"_ENABLED",
    b"_TYPE",
    b"_HEADER",
    b"_ISSUER",
    b"_AUDIENCE",
    b"_MOUNT",
];

/// Does an environment variable / ConfigMap key name look like it holds a secret?
///
/// The name is normalised ([`norm`]) once, on the stack unless it is long; the words and
/// suffixes are then compared byte for byte.
pub(crate) fn secret_like_name(name: &str) -> bool {
    let b = name.as_bytes();
    let mut stack = [0u8; 64];
    let mut heap = Vec::new();
    let normalised = match stack.get_mut(..b.len()) {
        Some(buf) => buf,
        None => {
            heap.resize(b.len(), 0);
            heap.as_mut_slice()
        }
    };
    for (n, &c) in normalised.iter_mut().zip(b) {
        *n = norm(c);
    }
    let n = &*normalised;
    SECRET_WORDS.iter().any(|w| contains(n, w))
        && !NOT_SECRET_SUFFIXES.iter().any(|s| n.ends_with(s))
}

/// Does `hay` contain `needle` (both non-empty in practice)?
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    hay.windows(needle.len())
        .any(|w| w.first() == Some(&first) && w == needle)
}

/// Is `v` a placeholder rather than a value (`${VAR}`, `$(VAR)`, `{{ .x }}`, `<changeme>`)?
fn placeholder(v: &str) -> bool {
    let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
    v.is_empty()
        || v.starts_with("${")
        || v.starts_with("$(")
        || v.starts_with("{{")
        || (v.starts_with('<') && v.ends_with('>'))
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Counts the bytes of `s` from `start` matching `pred`, up to `max`.
fn run_len(s: &[u8], start: usize, max: usize, pred: impl Fn(u8) -> bool) -> usize {
    s.get(start..)
        .unwrap_or(&[])
        .iter()
        .take(max)
        .take_while(|&&b| pred(b))
        .count()
}

/// Is there a word boundary before `i`?
fn boundary_before(s: &[u8], i: usize) -> bool {
    i == 0 || s.get(i - 1).is_none_or(|&b| !is_alnum(b) && b != b'_')
}

struct Prefixed {
    prefix: &'static str,
    min: usize,
    max: usize,
    token_char: fn(u8) -> bool,
    what: &'static str,
}

fn upper_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}
fn alnum(b: u8) -> bool {
    is_alnum(b)
}
fn alnum_us(b: u8) -> bool {
    is_alnum(b) || b == b'_'
}
fn alnum_dash_us(b: u8) -> bool {
    is_alnum(b) || b == b'_' || b == b'-'
}

const PREFIXED: &[Prefixed] = &[
    Prefixed {
        prefix: "AKIA",
        min: 16,
        max: 16,
        token_char: upper_digit,
        what: "an AWS access key id",
    },
    Prefixed {
        prefix: "ASIA",
        min: 16,
        max: 16,
        token_char: upper_digit,
        what: "an AWS temporary access key id",
    },
    Prefixed {
        prefix: "ghp_",
        min: 36,
        max: 36,
        token_char: alnum,
        what: "a GitHub personal access token",
    },
    Prefixed {
        prefix: "gho_",
        min: 36,
        max: 36,
        token_char: alnum,
        what: "a GitHub OAuth token",
    },
    Prefixed {
        prefix: "ghu_",
        min: 36,
        max: 36,
        token_char: alnum,
        what: "a GitHub user-to-server token",
    },
    Prefixed {
        prefix: "ghs_",
        min: 36,
        max: 36,
        token_char: alnum,
        what: "a GitHub server-to-server token",
    },
    Prefixed {
        prefix: "ghr_",
        min: 36,
        max: 36,
        token_char: alnum,
        what: "a GitHub refresh token",
    },
    Prefixed {
        prefix: "github_pat_",
        min: 22,
        max: 255,
        token_char: alnum_us,
        what: "a GitHub fine-grained token",
    },
    Prefixed {
        prefix: "glpat-",
        min: 20,
        max: 64,
        token_char: alnum_dash_us,
        what: "a GitLab personal access token",
    },
    Prefixed {
        prefix: "xoxb-",
        min: 10,
        max: 255,
        token_char: alnum_dash_us,
        what: "a Slack bot token",
    },
    Prefixed {
        prefix: "xoxp-",
        min: 10,
        max: 255,
        token_char: alnum_dash_us,
        what: "a Slack user token",
    },
    Prefixed {
        prefix: "xoxa-",
        min: 10,
        max: 255,
        token_char: alnum_dash_us,
        what: "a Slack app token",
    },
    Prefixed {
        prefix: "xoxr-",
        min: 10,
        max: 255,
        token_char: alnum_dash_us,
        what: "a Slack refresh token",
    },
    Prefixed {
        prefix: "AIza",
        min: 35,
        max: 35,
        token_char: alnum_dash_us,
        what: "a Google API key",
    },
    Prefixed {
        prefix: "sk_live_",
        min: 16,
        max: 255,
        token_char: alnum,
        what: "a Stripe secret key",
    },
    Prefixed {
        prefix: "rk_live_",
        min: 16,
        max: 255,
        token_char: alnum,
        what: "a Stripe restricted key",
    },
];

/// Whether a byte starts one of the [`PREFIXED`] prefixes.
const PREFIX_START: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < PREFIXED.len() {
        table[PREFIXED[i].prefix.as_bytes()[0] as usize] = true;
        i += 1;
    }
    table
};

/// The first entry of [`PREFIXED`] (in its order) whose prefix starts a token anywhere in `s`
/// after a word boundary, found in one pass over `s` for all of them. (No prefix overlaps
/// itself across a boundary character, so every occurrence counts as a separate match.)
fn prefixed_token(s: &[u8]) -> Option<&'static Prefixed> {
    let mut best = PREFIXED.len();
    for (i, &c) in s.iter().enumerate() {
        if !PREFIX_START[usize::from(c)] || !boundary_before(s, i) {
            continue;
        }
        let rest = s.get(i..).unwrap_or_default();
        let found = PREFIXED.iter().take(best).position(|p| {
            rest.starts_with(p.prefix.as_bytes()) && {
                let n = run_len(s, i + p.prefix.len(), p.max + 1, p.token_char);
                n >= p.min && n <= p.max
            }
        });
        if let Some(k) = found {
            best = k;
            if best == 0 {
                break;
            }
        }
    }
    PREFIXED.get(best)
}

/// Does a (ConfigMap) value contain something that looks like a credential? Returns what.
pub(crate) fn credential_in_value(v: &str) -> Option<&'static str> {
    if let Some(p) = prefixed_token(v.as_bytes()) {
        return Some(p.what);
    }
    if private_key_block(v) {
        return Some("a private key");
    }
    if url_with_password(v) {
        return Some("a URL with an embedded password");
    }
    if secret_assignment(v) {
        return Some("a password or secret assignment");
    }
    None
}

/// `-----BEGIN … PRIVATE KEY-----` (RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP … BLOCK).
fn private_key_block(v: &str) -> bool {
    v.match_indices("-----BEGIN ").any(|(i, _)| {
        let rest = &v[i + "-----BEGIN ".len()..];
        let line = rest.split('\n').next().unwrap_or("");
        match line.find("-----") {
            Some(end) => line[..end].contains("PRIVATE KEY"),
            None => false,
        }
    })
}

/// `scheme://user:password@host` with a real password.
fn url_with_password(v: &str) -> bool {
    v.match_indices("://").any(|(i, _)| {
        let rest = &v[i + 3..];
        let authority_end = rest
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, pass)) => !user.is_empty() && !placeholder(pass),
                    None => false,
                }
            }
            None => false,
        }
    })
}

/// A line `password = …` / `secret: …` / `"token": "…"` in an embedded config file.
fn secret_assignment(v: &str) -> bool {
    if !v.contains('\n') && !v.contains('=') && !v.contains(':') {
        return false;
    }
    v.lines().any(|line| {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with("//") {
            return false;
        }
        let Some(pos) = line.find(['=', ':']) else {
            return false;
        };
        let key = line[..pos].trim().trim_matches(|c| c == '"' || c == '\'');
        let value = line[pos + 1..].trim().trim_end_matches(',');
        !key.is_empty()
            && key.len() <= 64
            && !key.contains(char::is_whitespace)
            && secret_like_name(key)
            && !placeholder(value)
            && !value.starts_with('{')
            && !value.starts_with('[')
            && value != "null"
            && value != "true"
            && value != "false"
    })
}

/// An image reference split into (registry, repository path, tag, has_digest).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ImageParts<'a> {
    pub registry: &'a str,
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    pub digest: bool,
}

/// Splits an image reference the way the container runtimes do: the first component is a
/// registry when it contains `.` or `:` or is `localhost`, otherwise the image is on Docker Hub.
pub(crate) fn image_parts(image: &str) -> ImageParts<'_> {
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (name_no_tag, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    let (registry, repository) = match name_no_tag.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => ("docker.io", name_no_tag),
    };
    let registry = if [
        "index.docker.io",
        "registry-1.docker.io",
        "registry.hub.docker.com",
    ]
    .iter()
    .any(|alias| alias.eq_ignore_ascii_case(registry))
    {
        "docker.io"
    } else {
        registry
    };
    ImageParts {
        registry,
        repository,
        tag,
        digest,
    }
}

/// Host paths that expose a container runtime socket: the sockets themselves and every
/// directory above them (mounting `/run` exposes `/run/containerd/containerd.sock`).
const RUNTIME_SOCKET_PATHS: &[&str] = &[
    "/",
    "/run",
    "/var",
    "/var/run",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd",
    "/var/run/containerd",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/crio",
    "/var/run/crio",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/k3s",
    "/run/k3s/containerd",
    "/run/k3s/containerd/containerd.sock",
    "/run/cri-dockerd.sock",
    "/var/run/cri-dockerd.sock",
];

/// Does this hostPath path expose a container runtime socket?
pub(crate) fn runtime_socket(path: &str) -> bool {
    let trimmed = path.trim();
    let p = if trimmed.len() > 1 {
        trimmed.trim_end_matches('/')
    } else {
        trimmed
    };
    RUNTIME_SOCKET_PATHS.contains(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for n in [
            "DB_PASSWORD",
            "password",
            "api-key",
            "GITHUB_TOKEN",
            "aws.secret.access.key",
            "AWS_ACCESS_KEY_ID",
            "client_secret",
            "MYSQL_ROOT_PASSWD",
        ] {
            assert!(secret_like_name(n), "{n}");
        }
        for n in [
            "PASSWORD_FILE",
            "TOKEN_URL",
            "HOME",
            "PWD",
            "SECRET_NAME",
            "LOG_LEVEL",
            "KEY",
        ] {
            assert!(!secret_like_name(n), "{n}");
        }
    }

    #[test]
    fn credential_values() {
        let cases = [
            ("AKIAIOSFODNN7EXAMPLE", true),
            ("key=AKIAIOSFODNN7EXAMPL", false),
            ("token: ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", true),
            ("ghp_short", false),
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n", true),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", true),
            ("-----BEGIN CERTIFICATE-----\nMIIB\n", false),
            ("postgres://app:s3cret@db:5432/app", true),
            ("postgres://app@db:5432/app", false),
            ("postgres://app:${DB_PASSWORD}@db/app", false),
            ("spring.datasource.password=hunter2\nfoo=bar", true),
            ("password=${DB_PASSWORD}", false),
            ("log_level: debug\nport: 8080", false),
            ("xoxb-123456789012-abcdefghij", true),
            ("AIzaSyA-abcdefghijklmnopqrstuvwxyz01234", true),
            ("plain text", false),
        ];
        for (v, want) in cases {
            assert_eq!(credential_in_value(v).is_some(), want, "{v}");
        }
    }

    /// The matchers as first written (a search per word, per suffix and per prefix).
    fn secret_like_name_reference(name: &str) -> bool {
        let hay = name.as_bytes();
        let eq = |w: &[u8], n: &[u8]| w.iter().zip(n).all(|(&h, &n)| norm(h) == n);
        SECRET_WORDS
            .iter()
            .any(|w| w.len() <= hay.len() && hay.windows(w.len()).any(|win| eq(win, w)))
            && !NOT_SECRET_SUFFIXES
                .iter()
                .any(|s| hay.len() >= s.len() && eq(&hay[hay.len() - s.len()..], s))
    }

    fn prefixed_token_reference(v: &str) -> Option<&'static str> {
        let s = v.as_bytes();
        for p in PREFIXED {
            for (i, _) in v.match_indices(p.prefix) {
                let n = run_len(s, i + p.prefix.len(), p.max + 1, p.token_char);
                if boundary_before(s, i) && n >= p.min && n <= p.max {
                    return Some(p.what);
                }
            }
        }
        None
    }

    /// The one-pass matchers agree with the reference ones on names and values made of
    /// secret words, token prefixes, separators and token characters.
    #[test]
    fn matchers_agree_with_their_references() {
        let pieces = [
            "AKIA",
            "ASIA",
            "ghp_",
            "gho_",
            "github_pat_",
            "glpat-",
            "xoxb-",
            "xoxp-",
            "AIza",
            "sk_live_",
            "rk_live_",
            "A",
            "g",
            "x",
            "-",
            "_",
            ".",
            " ",
            "=",
            ":",
            "\n",
            "Z9",
            "abcdefghij",
            "0123456789ABCDEF",
            "KLMNOPQRSTUVWXYZ",
            "password",
            "Secret",
            "TOK",
            "en",
            "api-key",
            "_FILE",
            "_name",
            "\u{e9}",
            "\u{1f600}",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut tokens = 0;
        for _ in 0..50_000 {
            let len = 1 + next(12);
            let text: String = (0..len).map(|_| pieces[next(pieces.len())]).collect();
            assert_eq!(
                secret_like_name(&text),
                secret_like_name_reference(&text),
                "{text:?}"
            );
            let want = prefixed_token_reference(&text);
            assert_eq!(
                prefixed_token(text.as_bytes()).map(|p| p.what),
                want,
                "{text:?}"
            );
            tokens += usize::from(want.is_some());
        }
        assert!(tokens > 1000, "only {tokens} values hold a token");
        let long = format!("{}_PASSWORD{}", "x".repeat(100), "-y".repeat(40));
        assert_eq!(secret_like_name(&long), secret_like_name_reference(&long));
        assert!(secret_like_name(&long));
    }

    #[test]
    fn images() {
        let p = image_parts("nginx");
        assert_eq!(
            (p.registry, p.repository, p.tag, p.digest),
            ("docker.io", "nginx", None, false)
        );
        let p = image_parts("nginx:1.25");
        assert_eq!(p.tag, Some("1.25"));
        let p = image_parts("registry:5000/team/app");
        assert_eq!(
            (p.registry, p.repository, p.tag),
            ("registry:5000", "team/app", None)
        );
        let p = image_parts("registry:5000/team/app:v2");
        assert_eq!(p.tag, Some("v2"));
        let p = image_parts("ghcr.io/org/app@sha256:abcd");
        assert_eq!(
            (p.registry, p.repository, p.digest),
            ("ghcr.io", "org/app", true)
        );
        let p = image_parts("localhost/app:latest");
        assert_eq!((p.registry, p.tag), ("localhost", Some("latest")));
        let p = image_parts("index.docker.io/library/nginx:1");
        assert_eq!(p.registry, "docker.io");
    }

    #[test]
    fn sockets() {
        assert!(runtime_socket("/var/run/docker.sock"));
        assert!(runtime_socket("/run/containerd/"));
        assert!(runtime_socket("/var/run"));
        assert!(runtime_socket("/"));
        assert!(!runtime_socket("/var/log"));
        assert!(!runtime_socket("/data"));
    }
}
