//! OpenSSH-style wildcard patterns (`*` and `?`) and comma-separated
//! pattern lists with `!` negation, as used for principals and the
//! `namespaces` option of allowed signers files.

/// Matches `s` against a single wildcard pattern: `*` matches any run of
/// characters (including none), `?` exactly one character; everything
/// else matches itself.
pub fn match_pattern(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative matcher with single-star backtracking: O(len(s) * len(p)).
    let (mut si, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None; // (pattern index after '*', s index)
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                pi += 1;
                star = Some((pi, si));
            }
            Some(&c) if c == '?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((star_pi, star_si)) => {
                    pi = star_pi;
                    si = star_si + 1;
                    star = Some((star_pi, star_si + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Result of matching a string against a pattern list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMatch {
    /// A positive pattern matched and no negated one did.
    Allowed,
    /// A negated (`!pattern`) entry matched.
    Denied,
    /// Nothing matched.
    NoMatch,
}

/// Matches `s` against a comma-separated list of patterns, each optionally
/// negated with a leading `!`. A matching negated pattern wins over any
/// positive match (OpenSSH semantics).
pub fn match_pattern_list(s: &str, list: &str) -> ListMatch {
    let mut result = ListMatch::NoMatch;
    for entry in list.split(',') {
        let (negated, pattern) = match entry.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, entry),
        };
        if match_pattern(s, pattern) {
            if negated {
                return ListMatch::Denied;
            }
            result = ListMatch::Allowed;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_patterns() {
        assert!(match_pattern("git", "git"));
        assert!(!match_pattern("git", "gi"));
        assert!(!match_pattern("gi", "git"));
        assert!(match_pattern("alice@example.com", "*@example.com"));
        assert!(!match_pattern("alice@example.org", "*@example.com"));
        assert!(match_pattern("bob", "b?b"));
        assert!(!match_pattern("bb", "b?b"));
        assert!(match_pattern("", "*"));
        assert!(match_pattern("abcabd", "*abd"));
        assert!(match_pattern("a*b", "a*b"));
        assert!(match_pattern("axxbyyb", "a*b*b"));
        assert!(!match_pattern("axxbyy", "a*b*b"));
        assert!(match_pattern("héllo", "h?llo"));
    }

    #[test]
    fn pattern_lists() {
        assert_eq!(match_pattern_list("git", "git,file"), ListMatch::Allowed);
        assert_eq!(match_pattern_list("git", "file"), ListMatch::NoMatch);
        assert_eq!(match_pattern_list("git", "*"), ListMatch::Allowed);
        assert_eq!(match_pattern_list("git", "*,!git"), ListMatch::Denied);
        assert_eq!(match_pattern_list("git", "!git,*"), ListMatch::Denied);
        assert_eq!(match_pattern_list("file", "!git,*"), ListMatch::Allowed);
        assert_eq!(match_pattern_list("git", ""), ListMatch::NoMatch);
    }
}
