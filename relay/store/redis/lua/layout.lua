-- Run after the prelude, before the script itself: the Space's data is in layout 2 (trust
-- tiers) before the script reads any of it. Data written by a relay from before trust tiers
-- (layout 1, no mark in K_META) is upgraded here by whichever script touches the Space first,
-- in that script, so atomically: no script of any relay ever sees it half upgraded.
--
-- Layout 1 differs in three ways, each handled in O(1):
-- * Priority 1 was a page view (two priorities). Its sets move to priority 2: ready:1 becomes
--   ready:2 and queued:1 queued:2. Its events themselves keep priority 1 and no source:
--   `load` reads such an event as an API event of priority 2.
-- * Dedup keys named no event (K_DEDUP only, nothing in K_DEDUP_EV). Such an "order:NAME:ORDER"
--   key means what it meant: it names an API event that is not known any more. But an
--   idempotency key was "idem:KEY", without the event name, and made an event of any name a
--   duplicate. Until the last of them expires (K_META's legacy_until), `known` (enqueue.lua)
--   still finds an event's "idem:KEY" when its "idem:NAME:KEY" names nothing, as an API event
--   not known any more; a layout-1 "idem:" key is never read as a layout-2 one. (A layout-2
--   key written with the same text, "idem:NAME:KEY" of a new event, ends the old key's
--   meaning: the old event's key was "NAME:KEY" and the new one's "KEY", under one name.)
-- * No K_META: its `layout` field marks the upgraded Space ('2'), and legacy_until is set.
--
-- Only the relays must not mix: one from before trust tiers still writing to an upgraded
-- Space would write layout 1 into it.

if redis.call('HGET', K_META, 'layout') ~= '2' then
  -- A Space without the mark but with data of layout 2 (the mark was deleted) keeps its sets.
  if redis.call('EXISTS', K_READY2, K_QUEUED2, K_DEDUP_EV) == 0 then
    for _, move in ipairs({{K_READY1, K_READY2}, {K_QUEUED1, K_QUEUED2}}) do
      if redis.call('EXISTS', move[1]) == 1 then redis.call('RENAME', move[1], move[2]) end
    end
    local last = redis.call('ZRANGE', K_DEDUP, -1, -1, 'WITHSCORES')
    if last[2] then redis.call('HSET', K_META, 'legacy_until', last[2]) end
  end
  redis.call('HSET', K_META, 'layout', '2')
end
