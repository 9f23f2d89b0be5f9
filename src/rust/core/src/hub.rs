//! What the package reads of the Hugging Face Hub's API: the description of
//! a repository at a revision (`GET /api/models/<repo>/revision/<rev>`),
//! of which only the commit (`sha`) and the files (`siblings`) matter.

use serde::Deserialize;

use crate::error::{Error, Kind, Result};

/// A repository at a revision.
#[derive(Debug, PartialEq, Eq)]
pub struct Revision {
    /// The commit the revision names: 40 lower-case hexadecimal digits.
    pub commit: String,
    /// Every file of the repository at that commit, as paths in it.
    pub files: Vec<String>,
}

#[derive(Deserialize)]
struct RawRevision {
    sha: Option<String>,
    siblings: Option<Vec<RawSibling>>,
}

#[derive(Deserialize)]
struct RawSibling {
    rfilename: String,
}

/// Whether `s` is a full commit hash, as the Hub writes them.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses the API's answer (other fields are ignored).
pub fn parse_revision(bytes: &[u8]) -> Result<Revision> {
    let bad = |what: String| {
        Error::new(
            Kind::InvalidArgument,
            format!("the Hub's answer is not a repository's description: {what}"),
        )
    };
    let raw: RawRevision = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let Some(commit) = raw.sha.filter(|s| is_commit(s)) else {
        return Err(bad("it has no commit (`sha`)".to_string()));
    };
    let Some(siblings) = raw.siblings else {
        return Err(bad("it lists no files (`siblings`)".to_string()));
    };
    Ok(Revision {
        commit,
        files: siblings.into_iter().map(|s| s.rfilename).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_commit_and_files_and_ignores_the_rest() {
        let text = br#"{"_id":"x","id":"o/n","sha":"0123456789abcdef0123456789abcdef01234567",
            "cardData":{"sha":"not this one"},"siblings":[{"rfilename":"a.json"},{"rfilename":"unet/w \"q\".safetensors","size":3}]}"#;
        let r = parse_revision(text).unwrap();
        assert_eq!(r.commit, "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(
            r.files,
            vec!["a.json".to_string(), "unet/w \"q\".safetensors".to_string()]
        );
    }

    #[test]
    fn refuses_answers_without_a_commit_or_files() {
        for text in [
            &br#"{"siblings":[]}"#[..],
            br#"{"sha":"main","siblings":[]}"#,
            br#"{"sha":"0123456789abcdef0123456789abcdef01234567"}"#,
            b"<html>",
            b"",
        ] {
            assert_eq!(
                parse_revision(text).unwrap_err().kind,
                Kind::InvalidArgument
            );
        }
    }

    #[test]
    fn commits_are_forty_lower_case_hex_digits() {
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit("0123456789ABCDEF0123456789abcdef01234567"));
        assert!(!is_commit("0123456789abcdef0123456789abcdef0123456"));
        assert!(!is_commit("main"));
    }
}
