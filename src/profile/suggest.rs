//! "Did you mean" suggestions for misspelt keys and fields.

/// The candidate `word` was probably meant to be: one differing only in
/// case, else the nearest within two edits (the first of equals), else none.
/// Words of three characters or fewer get case-only suggestions.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if let Some(same) = candidates.iter().find(|c| c.eq_ignore_ascii_case(word)) {
        return Some(same);
    }
    if word.chars().count() <= 3 {
        return None;
    }
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance (insertions, deletions, substitutions) between `a` and
/// `b`, by character.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("", "ab"), 2);
        assert_eq!(distance("matchLabel", "matchLabels"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("é", "e"), 1);
    }

    #[test]
    fn case_first_then_nearest_within_two() {
        let keys = ["selectors", "virtualNode", "vSwitchIds", "securityGroupId"];
        assert_eq!(suggest("vswitchIds", &keys), Some("vSwitchIds"));
        assert_eq!(suggest("VSWITCHIDS", &keys), Some("vSwitchIds"));
        assert_eq!(suggest("selector", &keys), Some("selectors"));
        assert_eq!(suggest("virtualNodes", &keys), Some("virtualNode"));
        assert_eq!(suggest("vpcId", &keys), None);
        assert_eq!(suggest("somethingElse", &keys), None);
        let fields = ["matchLabels", "matchExpressions"];
        assert_eq!(suggest("matchLabel", &fields), Some("matchLabels"));
        assert_eq!(
            suggest("matchExpression", &fields),
            Some("matchExpressions")
        );
        // Short words only by case: "ke" is not "key".
        assert_eq!(suggest("ke", &["key"]), None);
        assert_eq!(suggest("KEY", &["key"]), Some("key"));
        assert_eq!(suggest("x", &[]), None);
    }
}
