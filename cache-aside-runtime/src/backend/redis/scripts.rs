//! The Lua scripts of the Redis backend: the lease's steps (see `engine::lease`). They read
//! an entry's header at the envelope's offsets, built from its constants
//! ([`crate::envelope`], its one owner): the offsets below are not written anywhere else.
//!
//! Every script touches one key, the entry's: a lease lives in its entry's header, so the
//! scripts run unchanged on a cluster. Those that need only the header read only the
//! header (`GETRANGE`): a key may hold a huge value written by someone else.

use std::sync::LazyLock;

use redis::Script;

use crate::envelope::{
    FLAG_EMPTY, FLAG_PENDING, FLAGS_AT, FRESH_AT, FRESH_LEN, HEADER_LEN, MAGIC, TOKEN_AT,
    TOKEN_LEN, VERSION,
};

/// Lua helpers every script starts with: `ours(v)` (an envelope of this version), `flag(v,
/// f)`, `token(v)` (the token field as bytes), `fresh(v)` (the fresh-until field as a
/// number of Unix ms). Lua strings are 1-based: a field at offset `o` of length `n` is bytes
/// `o+1 ..= o+n`.
fn prelude() -> String {
    let flags = FLAGS_AT + 1;
    let (token_first, token_last) = (TOKEN_AT + 1, TOKEN_AT + TOKEN_LEN);
    let (fresh_first, fresh_last) = (FRESH_AT + 1, FRESH_AT + FRESH_LEN);
    format!(
        r"
local function ours(v) return v and #v >= {HEADER_LEN} and string.byte(v, 1) == {MAGIC} and string.byte(v, 2) == {VERSION} end
local function flag(v, f) return bit.band(string.byte(v, {flags}), f) ~= 0 end
local function token(v) return string.sub(v, {token_first}, {token_last}) end
local function fresh(v)
  local ms = 0
  for i = {fresh_first}, {fresh_last} do ms = ms * 256 + string.byte(v, i) end
  return ms
end
"
    )
}

/// Takes the lease of a key, unless its value is fresh or another load holds it. Replies
/// with the value (fresh at `point`: a new value, or a back-off, that the caller can use),
/// `1` (the lease is the caller's) or an array of the other lease's token (another load's
/// lease is live: a PENDING key lives no longer than its lease, so a dead holder's
/// expires). A kept value (stale, or kept for fail-safe) is leased in place, still
/// readable, and lives at least as long as the lease; an empty key, or one holding anything
/// else, gets the placeholder (one larger than `max_value_bytes` without being read: it may
/// be huge). A PENDING
/// key without a TTL (left by anything but this library) gets `lock_ttl`, so it cannot
/// block every miss forever.
/// With `replace`, a value not held by another load is leased whatever its freshness (the
/// caller found it unreadable).
/// KEYS: entry. ARGV: token (8 bytes), lease ms, point (Unix ms), max value bytes,
/// placeholder, replace (`1` or `0`).
pub(crate) static LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(&lease_lua()));

fn lease_lua() -> String {
    let (pending, head_end, rest) = (FLAG_PENDING, FLAGS_AT, FLAGS_AT + 2);
    let (token_at, after_token) = (TOKEN_AT, TOKEN_AT + TOKEN_LEN + 1);
    format!(
        r"{prelude}
if redis.call('STRLEN', KEYS[1]) > tonumber(ARGV[4]) then
  redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[2])
  return 1
end
local v = redis.call('GET', KEYS[1])
if ours(v) and flag(v, {pending}) then
  if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return {{token(v)}}
end
if ours(v) and not flag(v, {FLAG_EMPTY}) then
  local f = fresh(v)
  if ARGV[6] ~= '1' and (f == 0 or f > tonumber(ARGV[3])) then return v end
  local leased = string.sub(v, 1, {head_end}) .. string.char(bit.bor(string.byte(v, {flags}), {pending}))
    .. string.sub(v, {rest}, {token_at}) .. ARGV[1] .. string.sub(v, {after_token})
  local left = redis.call('PTTL', KEYS[1])
  redis.call('SET', KEYS[1], leased, 'PX', math.max(left, tonumber(ARGV[2])))
  return 1
end
redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[2])
return 1
",
        prelude = prelude(),
        flags = FLAGS_AT + 1,
    )
}

/// Stores the value if the caller's lease still holds the key; `1` if it did. An
/// invalidation deleted the key, or a write replaced it: the value is dropped, since it
/// may have been read before that write.
/// KEYS: entry. ARGV: token, value, ttl ms.
pub(crate) static FILL: LazyLock<Script> = LazyLock::new(|| Script::new(&fill_lua()));

fn fill_lua() -> String {
    format!(
        r"{prelude}
local v = redis.call('GETRANGE', KEYS[1], 0, {last})
if ours(v) and flag(v, {FLAG_PENDING}) and token(v) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
",
        prelude = prelude(),
        last = HEADER_LEN - 1,
    )
}

/// Extends the caller's lease; `1` if it still holds it. A leased value lives at least as
/// long as its lease. KEYS: entry. ARGV: token, lease ms.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| Script::new(&extend_lua()));

fn extend_lua() -> String {
    format!(
        r"{prelude}
local v = redis.call('GETRANGE', KEYS[1], 0, {last})
if ours(v) and flag(v, {FLAG_PENDING}) and token(v) == ARGV[1] then
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return 1
end
return 0
",
        prelude = prelude(),
        last = HEADER_LEN - 1,
    )
}

/// Does the lease `token` (another load's) still hold the key? `1` if it does. A PENDING key
/// without a TTL (left by anything but this library) gets `lock_ttl`, as `LEASE` gives it:
/// a load beside such a lease never takes it, and would otherwise leave the key uncached
/// for good. KEYS: entry. ARGV: token, lease ms.
pub(crate) static HOLDS: LazyLock<Script> = LazyLock::new(|| Script::new(&holds_lua()));

fn holds_lua() -> String {
    format!(
        r"{prelude}
local v = redis.call('GETRANGE', KEYS[1], 0, {last})
if ours(v) and flag(v, {FLAG_PENDING}) and token(v) == ARGV[1] then
  if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return 1
end
return 0
",
        prelude = prelude(),
        last = HEADER_LEN - 1,
    )
}

/// Gives up the caller's lease without a new value: a placeholder is deleted; a leased
/// value has PENDING cleared (and, for fail-safe's back-off, a new fresh-until time) and
/// expires when it would have (its fresh-until time plus the function's `keep`; the lease
/// may have pushed its expiry out), or is deleted if that time is past. `1` if the lease was
/// still the caller's.
/// KEYS: entry. ARGV: token, new fresh-until (8 bytes, or empty to keep it), keep ms, now
/// (Unix ms).
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(&release_lua()));

fn release_lua() -> String {
    let (fresh_first, fresh_last) = (FRESH_AT + 1, FRESH_AT + FRESH_LEN);
    format!(
        r"{prelude}
local v = redis.call('GET', KEYS[1])
if not (ours(v) and flag(v, {FLAG_PENDING}) and token(v) == ARGV[1]) then return 0 end
local expires = fresh(v) + tonumber(ARGV[3])
if flag(v, {FLAG_EMPTY}) or expires <= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
  return 1
end
local f = ARGV[2]
if f == '' then f = string.sub(v, {fresh_first}, {fresh_last}) end
local flags = bit.band(string.byte(v, {flags}), {not_pending})
local header = string.sub(v, 1, {before_flags}) .. string.char(flags) .. string.sub(v, {codec}, {codec}) .. f
redis.call('SET', KEYS[1], header .. string.sub(v, {token_first}), 'PXAT', string.format('%.0f', expires))
return 1
",
        prelude = prelude(),
        flags = FLAGS_AT + 1,
        not_pending = !FLAG_PENDING,
        before_flags = FLAGS_AT,
        codec = FLAGS_AT + 2,
        token_first = TOKEN_AT + 1,
    )
}

/// Deletes the key if its value is longer than `max` bytes, without reading it; replies with
/// its length if it did, else 0. One step: a `STRLEN` then an `UNLINK` would delete whatever
/// replaced a huge value in between (a lease's placeholder, a fresh entry).
/// KEYS: entry. ARGV: max bytes.
pub(crate) static DROP_IF_LARGER: LazyLock<Script> =
    LazyLock::new(|| Script::new(&drop_if_larger_lua()));

fn drop_if_larger_lua() -> String {
    r"
local n = redis.call('STRLEN', KEYS[1])
if n > tonumber(ARGV[1]) then
  redis.call('UNLINK', KEYS[1])
  return n
end
return 0
"
    .to_owned()
}

/// The time to live of an entry, as `PTTL` gives it, with a placeholder counting as no
/// entry (`-2`). KEYS: entry.
pub(crate) static TTL: LazyLock<Script> = LazyLock::new(|| Script::new(&ttl_lua()));

fn ttl_lua() -> String {
    format!(
        r"{prelude}
local v = redis.call('GETRANGE', KEYS[1], 0, {last})
if v == '' or (ours(v) and flag(v, {FLAG_EMPTY})) then return -2 end
return redis.call('PTTL', KEYS[1])
",
        prelude = prelude(),
        last = HEADER_LEN - 1,
    )
}

/// Adds an entry's key to a tag's set (see [`crate::tag`]), scored by when the entry
/// expires (never lowering a score already there); drops the keys whose entries expired;
/// pushes the set's own expiry out to its last entry's, so the set lives exactly as long as
/// something may carry the tag. Touches the set only, so it runs on any node of a cluster.
/// Replies 1 if the set did not hold the member. KEYS: the set. ARGV: member, expiry
/// (Unix ms), now (Unix ms).
pub(crate) static TAG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local added = redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], 0, 0, 'REV', 'WITHSCORES')
local expiry = tonumber(last[2] or ARGV[2])
if redis.call('PEXPIRETIME', KEYS[1]) < expiry then
  redis.call('PEXPIREAT', KEYS[1], expiry)
end
return added
",
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    /// The scripts read the header where the envelope writes it: the prelude built from the
    /// constants is the text these offsets give today (a change of layout changes both).
    #[test]
    fn scripts_read_the_envelopes_offsets() {
        assert_eq!(
            prelude(),
            r"
local function ours(v) return v and #v >= 20 and string.byte(v, 1) == 202 and string.byte(v, 2) == 3 end
local function flag(v, f) return bit.band(string.byte(v, 3), f) ~= 0 end
local function token(v) return string.sub(v, 13, 20) end
local function fresh(v)
  local ms = 0
  for i = 5, 12 do ms = ms * 256 + string.byte(v, i) end
  return ms
end
"
        );
        for lua in [
            lease_lua(),
            fill_lua(),
            extend_lua(),
            release_lua(),
            ttl_lua(),
        ] {
            assert!(lua.starts_with(&prelude()), "{lua}");
        }
        // Where `RELEASE` rebuilds a header: bytes 1-2, the flags without PENDING (bit 1),
        // the codec, the fresh-until field, then the token and the payload as they were.
        assert!(release_lua().contains(
            "local flags = bit.band(string.byte(v, 3), 253)
local header = string.sub(v, 1, 2) .. string.char(flags) .. string.sub(v, 4, 4) .. f
redis.call('SET', KEYS[1], header .. string.sub(v, 13), 'PXAT', string.format('%.0f', expires))"
        ));
        // Where `LEASE` marks a kept value PENDING with the caller's token.
        assert!(lease_lua().contains(
            "local leased = string.sub(v, 1, 2) .. string.char(bit.bor(string.byte(v, 3), 2))
    .. string.sub(v, 4, 12) .. ARGV[1] .. string.sub(v, 21)"
        ));
    }
}
