//! Which scope a Glean Client API path needs, so the proxy can answer 403
//! itself instead of spending a round trip on a token that lacks it.
//!
//! A pre-flight, not a firewall: a path not listed is forwarded and Glean
//! decides. So only paths whose scope is beyond doubt are listed: those
//! Glean's token guide names (search and autocomplete need SEARCH, chat
//! needs CHAT), and endpoint families named after a scope (answers need
//! ANSWERS, collections COLLECTIONS, …). Paths whose scope the guide leaves
//! open (`/listentities` and `/people`: ENTITIES or PEOPLE; `/feed`: FEED
//! or SEARCH; `/feedback`; `/getdocpermissions`; admin endpoints) are left
//! to Glean: listing a wrong guess would refuse calls Glean allows.

/// Client API paths under `/rest/api/v1` and the scope each needs.
const TABLE: &[(&str, &str)] = &[
    // Named by Glean's token guide.
    ("search", "SEARCH"),
    ("autocomplete", "SEARCH"),
    ("chat", "CHAT"),
    // Endpoint families named after their scope.
    ("listchats", "CHAT"),
    ("getchat", "CHAT"),
    ("deletechats", "CHAT"),
    ("deleteallchats", "CHAT"),
    ("getchatapplication", "CHAT"),
    ("uploadchatfiles", "CHAT"),
    ("getchatfiles", "CHAT"),
    ("deletechatfiles", "CHAT"),
    ("getdocuments", "DOCUMENTS"),
    ("getdocumentsbyfacets", "DOCUMENTS"),
    ("summarize", "SUMMARIZE"),
    ("activity", "ACTIVITY"),
    ("insights", "INSIGHTS"),
    ("createannouncement", "ANNOUNCEMENTS"),
    ("updateannouncement", "ANNOUNCEMENTS"),
    ("deleteannouncement", "ANNOUNCEMENTS"),
    ("createanswer", "ANSWERS"),
    ("editanswer", "ANSWERS"),
    ("deleteanswer", "ANSWERS"),
    ("getanswer", "ANSWERS"),
    ("listanswers", "ANSWERS"),
    ("createcollection", "COLLECTIONS"),
    ("editcollection", "COLLECTIONS"),
    ("deletecollection", "COLLECTIONS"),
    ("getcollection", "COLLECTIONS"),
    ("listcollections", "COLLECTIONS"),
    ("addcollectionitems", "COLLECTIONS"),
    ("editcollectionitem", "COLLECTIONS"),
    ("deletecollectionitem", "COLLECTIONS"),
    ("pin", "PINS"),
    ("unpin", "PINS"),
    ("editpin", "PINS"),
    ("getpin", "PINS"),
    ("listpins", "PINS"),
    ("createshortcut", "SHORTCUTS"),
    ("updateshortcut", "SHORTCUTS"),
    ("deleteshortcut", "SHORTCUTS"),
    ("getshortcut", "SHORTCUTS"),
    ("listshortcuts", "SHORTCUTS"),
    ("verify", "VERIFICATION"),
    ("addverificationreminder", "VERIFICATION"),
    ("listverifications", "VERIFICATION"),
];

/// The scope `path` (without query) needs, if the table knows it. A
/// trailing slash is ignored; matching is exact otherwise, as Glean's paths
/// are.
pub fn required(path: &str) -> Option<&'static str> {
    let name = path.strip_prefix("/rest/api/v1/")?;
    let name = name.strip_suffix('/').unwrap_or(name);
    TABLE
        .iter()
        .find(|(p, _)| *p == name)
        .map(|(_, scope)| *scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_need_their_scope_and_others_are_glean_s_call() {
        assert_eq!(required("/rest/api/v1/search"), Some("SEARCH"));
        assert_eq!(required("/rest/api/v1/chat/"), Some("CHAT"));
        assert_eq!(required("/rest/api/v1/listanswers"), Some("ANSWERS"));
        assert_eq!(required("/rest/api/v1/listentities"), None);
        assert_eq!(required("/rest/api/v1/searchx"), None);
        assert_eq!(required("/api/search"), None);
        assert_eq!(required("/search"), None);
    }

    #[test]
    fn every_scope_in_the_table_is_one_of_gleans() {
        for (path, scope) in TABLE {
            assert!(
                scope.parse::<crate::glean::Scope>().is_ok(),
                "{path}: {scope} is not a Glean scope"
            );
        }
    }
}
