//! Glob-style pattern matching exactly as Redis's `stringmatchlen`
//! (KEYS, SCAN MATCH, CONFIG GET, COMMAND LIST FILTERBY PATTERN).

/// Whether `text` matches `pattern`: `*` any run, `?` any byte,
/// `[abc]`, `[^abc]`, `[a-z]` classes, `\x` a literal x.
pub fn glob_match(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, t));
                    continue;
                }
                b'?' => Some(p + 1),
                b'[' => class(pattern, p, text[t], nocase),
                b'\\' if p + 1 < pattern.len() => eq(pattern[p + 1], text[t]).then_some(p + 2),
                c => eq(c, text[t]).then_some(p + 1),
            }
        } else {
            None
        };
        match step {
            Some(next) => {
                p = next;
                t += 1;
            }
            None => match star {
                Some((sp, st)) => {
                    p = sp;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[start] == b'['`;
/// returns the pattern index after the class on a match.
fn class(pattern: &[u8], start: usize, c: u8, nocase: bool) -> Option<usize> {
    let fold = |x: u8| if nocase { x.to_ascii_lowercase() } else { x };
    let c = fold(c);
    let mut p = start + 1;
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut matched = false;
    loop {
        match pattern.get(p) {
            // An unterminated class ends at the end of the pattern (Redis).
            None => {
                p -= 1;
                break;
            }
            Some(b']') => break,
            Some(b'\\') if p + 1 < pattern.len() => {
                p += 1;
                matched |= fold(pattern[p]) == c;
            }
            Some(&lo) if pattern.get(p + 1) == Some(&b'-') && p + 2 < pattern.len() => {
                let hi = pattern[p + 2];
                let (lo, hi) = (fold(lo).min(fold(hi)), fold(lo).max(fold(hi)));
                matched |= (lo..=hi).contains(&c);
                p += 2;
            }
            Some(&x) => matched |= fold(x) == c,
        }
        p += 1;
    }
    (matched != negate).then_some(p + 1)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn matches_like_redis() {
        let yes =
            |p: &str, t: &str| assert!(glob_match(p.as_bytes(), t.as_bytes(), false), "{p} {t}");
        let no =
            |p: &str, t: &str| assert!(!glob_match(p.as_bytes(), t.as_bytes(), false), "{p} {t}");
        yes("*", "");
        yes("*", "anything");
        yes("h?llo", "hello");
        no("h?llo", "hllo");
        yes("h*llo", "heeeello");
        yes("h[ae]llo", "hallo");
        no("h[ae]llo", "hillo");
        yes("h[^e]llo", "hallo");
        no("h[^e]llo", "hello");
        yes("h[a-b]llo", "hbllo");
        yes("h\\*llo", "h*llo");
        no("h\\*llo", "hello");
        yes("a*b*c", "axxbyyc");
        no("a*b*c", "axxbyy");
        yes("user:*", "user:1");
        assert!(glob_match(b"MAX*", b"maxclients", true));
    }
}
