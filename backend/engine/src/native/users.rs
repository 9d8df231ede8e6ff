//! Resolves Docker's `--user` syntax against an image's /etc/passwd and /etc/group, with the
//! semantics of runc's `user.GetExecUser` (which Docker uses).

use crate::api::{EngineError, Result};

/// Docker (through runc) refuses ids above this, so we do too: ids of 2^31 and up are
/// reserved or mean "no id" in much of the kernel and userland (`(uid_t)-1`, overflow ids).
const MAX_ID: u32 = i32::MAX as u32;

/// Who a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The passwd entry's home directory, when the user was found there.
    pub home: Option<String>,
}

/// `spec` is Docker's --user syntax: "" (root), "uid", "uid:gid", "name", "name:group",
/// "uid:group", "name:gid".
/// passwd/group are the image's /etc/passwd and /etc/group contents, if the image has them.
///
/// As in runc: a numeric user is always a uid (even when a user has that number as its
/// name) and may be absent from passwd; a named user must exist. Without an explicit group the
/// primary gid comes from the passwd entry (0 when there is none) and the supplementary groups
/// are those listing the user as a member; with an explicit group there are none.
pub fn resolve_user(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<ResolvedUser> {
    // Like runc's parseLine: anything after a second colon is ignored.
    let mut parts = spec.split(':');
    let user_arg = parts.next().unwrap_or("");
    let group_arg = parts.next().unwrap_or("");

    let uid_arg = parse_id(user_arg, spec)?;
    let gid_arg = parse_id(group_arg, spec)?;

    let users = passwd.map(parse_passwd).unwrap_or_default();
    let matched = users.iter().find(|u| match (user_arg, uid_arg) {
        // No user given: whoever uid 0 is in this image (for its gid, home and groups).
        ("", _) => u.uid == 0,
        (_, Some(uid)) => u.uid == uid,
        (name, None) => u.name == name,
    });

    let mut resolved = ResolvedUser { uid: 0, gid: 0, additional_gids: Vec::new(), home: None };
    match (matched, uid_arg) {
        (Some(u), _) => {
            resolved.uid = u.uid;
            resolved.gid = u.gid;
            resolved.home = Some(u.home.to_string());
        }
        (None, Some(uid)) => resolved.uid = uid,
        (None, None) if user_arg.is_empty() => {}
        (None, None) => {
            return Err(EngineError::invalid(format!(
                "unable to find user {user_arg}: no matching entries in passwd file"
            )))
        }
    }

    let groups = group.map(parse_group).unwrap_or_default();
    if !group_arg.is_empty() {
        let found = groups.iter().find(|g| match gid_arg {
            Some(gid) => g.gid == gid,
            None => g.name == group_arg,
        });
        resolved.gid = match (found, gid_arg) {
            (Some(g), _) => g.gid,
            (None, Some(gid)) => gid,
            (None, None) => {
                return Err(EngineError::invalid(format!(
                    "unable to find group {group_arg}: no matching entries in group file"
                )))
            }
        };
    } else if let Some(u) = matched {
        for g in groups.iter().filter(|g| g.members.contains(&u.name)) {
            if !resolved.additional_gids.contains(&g.gid) {
                resolved.additional_gids.push(g.gid);
            }
        }
    }

    Ok(resolved)
}

/// A numeric user or group part as an id; `None` when it is a name (or empty).
/// Anything that looks like a number is treated as one, so `-1` or a huge value is reported
/// as out of range rather than looked up as a name.
fn parse_id(arg: &str, spec: &str) -> Result<Option<u32>> {
    let digits = arg.strip_prefix(['-', '+']).unwrap_or(arg);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let out_of_range =
        || EngineError::invalid(format!("invalid user {spec:?}: uids and gids must be in range 0-{MAX_ID}"));
    if arg.starts_with('-') && digits.bytes().any(|b| b != b'0') {
        return Err(out_of_range());
    }
    match digits.parse::<u32>() {
        Ok(id) if id <= MAX_ID => Ok(Some(id)),
        _ => Err(out_of_range()),
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Lines that are comments, blank, or lack a usable name/uid/gid are skipped rather than
/// failing the whole lookup: images ship hand-edited files, and runc tolerates them too.
fn entries(contents: &str) -> impl Iterator<Item = Vec<&str>> {
    contents
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
}

/// `name:password:uid:gid:gecos:home:shell`
fn parse_passwd(contents: &str) -> Vec<PasswdEntry<'_>> {
    entries(contents)
        .filter_map(|f| {
            let name = *f.first().filter(|n| !n.is_empty())?;
            Some(PasswdEntry {
                name,
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).copied().unwrap_or(""),
            })
        })
        .collect()
}

/// `name:password:gid:member,member,...`
fn parse_group(contents: &str) -> Vec<GroupEntry<'_>> {
    entries(contents)
        .filter_map(|f| {
            let name = *f.first().filter(|n| !n.is_empty())?;
            Some(GroupEntry {
                name,
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|list| list.split(',').map(str::trim).filter(|m| !m.is_empty()).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ErrorKind;

    const PASSWD: &str = "\
# managed by hand
root:x:0:0:root:/root:/bin/sh

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line without colons
badid:x:notanumber:5:bad:/nowhere:/bin/false
app:x:1000:1001:App User:/home/app:/bin/sh
dup:x:1000:9999:Second 1000:/home/dup:/bin/sh
2000:x:3000:3000:numeric name:/home/n:/bin/sh
";

    const GROUP: &str = "\
root:x:0:
# comment
daemon:x:1:
appgrp:x:1001:
wheel:x:10:root, app
audio:x:29:app
garbage
video:x:44:other,app,
staff:x:50:app
staffdup:x:50:app
";

    fn resolve(spec: &str) -> Result<ResolvedUser> {
        resolve_user(spec, Some(PASSWD), Some(GROUP))
    }

    fn invalid_message(r: Result<ResolvedUser>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        e.message().to_string()
    }

    #[test]
    fn empty_spec_is_root_with_roots_groups_and_home() {
        let u = resolve("").unwrap();
        assert_eq!(u, ResolvedUser { uid: 0, gid: 0, additional_gids: vec![10], home: Some("/root".into()) });
    }

    #[test]
    fn empty_spec_without_files_is_plain_root() {
        let u = resolve_user("", None, None).unwrap();
        assert_eq!(u, ResolvedUser { uid: 0, gid: 0, additional_gids: vec![], home: None });
    }

    #[test]
    fn name_resolves_uid_gid_home_and_supplementary_groups() {
        let u = resolve("app").unwrap();
        assert_eq!(u.uid, 1000);
        assert_eq!(u.gid, 1001);
        assert_eq!(u.home.as_deref(), Some("/home/app"));
        // wheel (spaces around members tolerated), audio, video (trailing comma), staff once.
        assert_eq!(u.additional_gids, vec![10, 29, 44, 50]);
    }

    #[test]
    fn numeric_uid_in_passwd_takes_first_entry_and_its_groups() {
        let u = resolve("1000").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        assert_eq!(u.additional_gids, vec![10, 29, 44, 50]);
    }

    #[test]
    fn numeric_uid_is_never_looked_up_as_a_name() {
        // "2000" is the *name* of uid 3000, but a number always means a uid.
        let u = resolve("2000").unwrap();
        assert_eq!(u, ResolvedUser { uid: 2000, gid: 0, additional_gids: vec![], home: None });
    }

    #[test]
    fn numeric_uid_without_entry_or_files_defaults_gid_to_zero() {
        assert_eq!(resolve("4242").unwrap(), ResolvedUser { uid: 4242, gid: 0, additional_gids: vec![], home: None });
        assert_eq!(
            resolve_user("4242", None, None).unwrap(),
            ResolvedUser { uid: 4242, gid: 0, additional_gids: vec![], home: None }
        );
    }

    #[test]
    fn uid_and_numeric_gid() {
        let u = resolve("4242:777").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 777));
        let u = resolve_user("4242:777", None, None).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 777));
    }

    #[test]
    fn explicit_group_replaces_gid_and_drops_supplementary_groups() {
        let u = resolve("app:audio").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 29));
        assert!(u.additional_gids.is_empty());
        assert_eq!(u.home.as_deref(), Some("/home/app"));

        let u = resolve("app:0").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 0));
        assert!(u.additional_gids.is_empty());
    }

    #[test]
    fn uid_with_group_name_and_name_with_gid() {
        let u = resolve("4242:wheel").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 10));
        let u = resolve("daemon:123").unwrap();
        assert_eq!((u.uid, u.gid), (1, 123));
    }

    #[test]
    fn group_only_spec_keeps_root() {
        let u = resolve(":staff").unwrap();
        assert_eq!((u.uid, u.gid), (0, 50));
        assert!(u.additional_gids.is_empty());
    }

    #[test]
    fn unknown_user_name_is_invalid() {
        assert_eq!(
            invalid_message(resolve("nobody")),
            "unable to find user nobody: no matching entries in passwd file"
        );
        // Without a passwd file no name can be resolved.
        assert_eq!(
            invalid_message(resolve_user("app", None, None)),
            "unable to find user app: no matching entries in passwd file"
        );
    }

    #[test]
    fn unknown_group_name_is_invalid() {
        assert_eq!(
            invalid_message(resolve("app:nogroup")),
            "unable to find group nogroup: no matching entries in group file"
        );
        assert_eq!(
            invalid_message(resolve_user("1000:staff", Some(PASSWD), None)),
            "unable to find group staff: no matching entries in group file"
        );
    }

    #[test]
    fn malformed_lines_are_skipped_not_matched() {
        // The line with a non-numeric uid must not turn into uid 0 (as a lax parser would).
        assert!(invalid_message(resolve("badid")).contains("unable to find user badid"));
        assert!(invalid_message(resolve("broken line without colons")).contains("passwd"));
        assert!(invalid_message(resolve("app:garbage")).contains("unable to find group garbage"));
        // Comment lines are not entries either.
        assert!(invalid_message(resolve("# managed by hand")).contains("passwd"));
    }

    #[test]
    fn negative_and_oversized_ids_are_rejected() {
        for spec in ["-1", "1000:-5", "4294967296", "2147483648", "99999999999999999999", "0:4294967295"] {
            let msg = invalid_message(resolve(spec));
            assert!(msg.contains("must be in range 0-2147483647"), "{spec}: {msg}");
        }
        assert_eq!(resolve("2147483647").unwrap().uid, 2147483647);
    }

    #[test]
    fn extra_fields_after_group_are_ignored() {
        let u = resolve("app:audio:whatever").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 29));
    }
}
