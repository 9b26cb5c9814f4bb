//! The Lua scripts of the Redis backend. Those that read an entry's header are built from
//! the envelope's constants ([`crate::envelope`]), its one owner: the offsets below are not
//! written anywhere else.

use std::sync::LazyLock;

use redis::Script;

use crate::envelope::{FRESH_AT, FRESH_LEN, HEADER_LEN, MAGIC};

/// `GET` the value if it is still fresh, else try to take the lock. Replies with the
/// value, `1` (lock taken) or `0` (someone else holds it). An entry past its fresh-until
/// time (kept for stale serving) counts as absent. A lock key without a TTL (left by
/// anything but this library) gets `lock_ttl`, so it cannot block every miss forever.
/// An entry over `max_value_bytes` is not ours to serve: absent.
/// KEYS: value, lock. ARGV: token, lock ms, now (Unix ms), max value bytes.
pub(crate) static GET_OR_LOCK: LazyLock<Script> = LazyLock::new(|| {
    // Lua strings are 1-based: the fresh-until field is bytes FRESH_AT+1 ..= FRESH_AT+FRESH_LEN.
    let (first, last) = (FRESH_AT + 1, FRESH_AT + FRESH_LEN);
    Script::new(&format!(
        r"
local v = redis.call('GET', KEYS[1])
if v and #v >= {HEADER_LEN} and #v <= tonumber(ARGV[4]) and string.byte(v, 1) == {MAGIC} then
  local fresh = 0
  for i = {first}, {last} do fresh = fresh * 256 + string.byte(v, i) end
  if fresh == 0 or fresh > tonumber(ARGV[3]) then return v end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('PTTL', KEYS[2]) == -1 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 0
"
    ))
});

/// Extends the lock if this token still holds it. KEYS: lock. ARGV: token, lock ms.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Optionally stores the value, then deletes the lock if this token still holds it: the
/// value lands before the lock goes, so a poller never sees neither. KEYS: lock[, value].
/// ARGV: token[, value, ttl ms].
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if KEYS[2] then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Rewrites an entry's header if it is still the one the caller saw, keeping the payload
/// and the expiry: how fail-safe backs off without clobbering a value another process
/// stored meanwhile. KEYS: value. ARGV: old header, new header.
pub(crate) static RETIME: LazyLock<Script> = LazyLock::new(|| {
    let payload = HEADER_LEN + 1;
    Script::new(&format!(
        r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, {HEADER_LEN}) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2] .. string.sub(v, {payload}), 'KEEPTTL')
  return 1
end
return 0
"
    ))
});

#[cfg(test)]
mod tests {
    use super::*;

    /// The scripts read the header where the envelope writes it: the text built from the
    /// constants is the text these offsets give today (a change of layout changes both).
    #[test]
    fn scripts_read_the_envelopes_offsets() {
        let get_or_lock = GET_OR_LOCK.get_hash().to_owned();
        assert_eq!(
            Script::new(
                r"
local v = redis.call('GET', KEYS[1])
if v and #v >= 12 and #v <= tonumber(ARGV[4]) and string.byte(v, 1) == 202 then
  local fresh = 0
  for i = 5, 12 do fresh = fresh * 256 + string.byte(v, i) end
  if fresh == 0 or fresh > tonumber(ARGV[3]) then return v end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('PTTL', KEYS[2]) == -1 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 0
"
            )
            .get_hash(),
            get_or_lock
        );
        assert_eq!(
            Script::new(
                r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 12) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2] .. string.sub(v, 13), 'KEEPTTL')
  return 1
end
return 0
"
            )
            .get_hash(),
            RETIME.get_hash()
        );
    }
}
