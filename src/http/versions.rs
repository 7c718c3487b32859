//! API versions: `GET /services/data/` and the `vNN.N` segment of every other path.

use serde_json::{Value, json};

/// The oldest version accepted (Winter '20, when the checkout actions appeared).
pub const MIN_VERSION: u32 = 47;

/// The newest version `GET /services/data/` lists (Summer '25). Newer numbers are accepted
/// in paths too, so clients pinned to a later release keep working.
pub const LATEST_VERSION: u32 = 64;

/// An accepted version: `v` + major (at least [`MIN_VERSION`]) + `.` + one digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersion {
    major: u32,
    minor: u32,
}

impl ApiVersion {
    /// Parses a path segment such as `v62.0`; `None` for anything else.
    pub fn parse(segment: &str) -> Option<ApiVersion> {
        let (major, minor) = segment.strip_prefix('v')?.split_once('.')?;
        let digits = |s: &str, max: usize| {
            (!s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
        };
        let version = ApiVersion {
            major: digits(major, 4)?,
            minor: digits(minor, 1)?,
        };
        (version.major >= MIN_VERSION).then_some(version)
    }

    /// `NN.N`, as URLs and the versions list spell it.
    pub fn number(self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

/// The release a version shipped in: three a year, 47.0 being Winter '20.
fn label(major: u32) -> String {
    let since = major - MIN_VERSION;
    let season = ["Winter", "Spring", "Summer"][(since % 3) as usize];
    format!("{season} '{:02}", 20 + since / 3)
}

/// The body of `GET /services/data/`.
pub(crate) fn list() -> Value {
    Value::Array(
        (MIN_VERSION..=LATEST_VERSION)
            .map(|major| {
                json!({
                    "label": label(major),
                    "url": format!("/services/data/v{major}.0"),
                    "version": format!("{major}.0"),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_47_up_parse_and_others_do_not() {
        assert_eq!(ApiVersion::parse("v47.0").unwrap().number(), "47.0");
        assert_eq!(ApiVersion::parse("v64.0").unwrap().number(), "64.0");
        assert_eq!(ApiVersion::parse("v120.0").unwrap().number(), "120.0");
        for bad in [
            "v46.0", "v0.0", "47.0", "v47", "v47.", "v.0", "v47.00", "vx.0", "v47.0.1", "v+47.0",
            "v99999.0", "V47.0", "",
        ] {
            assert_eq!(ApiVersion::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn labels_follow_the_release_calendar() {
        assert_eq!(label(47), "Winter '20");
        assert_eq!(label(48), "Spring '20");
        assert_eq!(label(49), "Summer '20");
        assert_eq!(label(50), "Winter '21");
        assert_eq!(label(64), "Summer '25");
        let listed = list();
        let listed = listed.as_array().unwrap();
        assert_eq!(listed.len() as u32, LATEST_VERSION - MIN_VERSION + 1);
        assert_eq!(listed[0]["url"], "/services/data/v47.0");
    }
}
