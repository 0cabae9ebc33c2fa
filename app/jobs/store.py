"""Training jobs in Valkey/Redis: the keys, and the few scripts that change a job atomically.

Used by both sides of the shared mode: the web processes (app/jobs/shared.py) and the RQ
workers (app/jobs/worker.py). Every change bumps the job's ``version`` and PUBLISHes it on
``cnnlab:wake:job:<id>`` (the web processes' Hub wakes their mirrors of that job).

    cnnlab:job:<id>               hash: session, address, spec (JSON), limits (JSON), status,
                                  created/started/finished/heartbeat (wall times), version,
                                  message (JSON [msgid, args], translated when read), metrics
                                  (JSON), filters (JSON), weights (np.save of flat_params), wver
                                  (bumped with the weights), rgen (bumped when the records are
                                  rewritten), stop ("1" once asked to stop), stop_at, host and
                                  pid (of the horse training it)
    cnnlab:job:<id>:records       list of Progress.to_dict() JSON, append-only but rewritten
                                  when the batch records are thinned (Job._record)
    cnnlab:jobs:active            set of every unfinished job id        (the caps, the sweep)
    cnnlab:jobs:active:s:<sess>   set of a session's unfinished job ids
    cnnlab:jobs:active:a:<addr>   set of an address's unfinished job ids
    cnnlab:jobs:queued            zset id → created: waiting for a worker, in order
    cnnlab:jobs:s:<sess>          zset id → created: a session's jobs (list())
    cnnlab:seen:<sess>            wall time the session last asked about its jobs (touch())
    cnnlab:workers                zset worker name → wall time its entry expires

A finished job's hash and records expire after ``job_ttl_seconds``. Scripts build the
session's and address's keys themselves (one Valkey server, not a cluster).
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import numpy as np
import redis

from cnnlab.app.backend import KEY, WAKE
from cnnlab.app.jobs.job import Job
from cnnlab.app.settings import Settings

__all__ = ["QUEUE_NAME", "Scripts", "job_key", "records_key", "channel", "seen_key", "session_jobs_key",
           "ACTIVE_KEY", "QUEUED_KEY", "WORKERS_KEY", "ACTIVE_SESSION_KEY", "ACTIVE_ADDRESS_KEY", "message_json",
           "live_workers", "decode", "npy", "queued_fields", "finished_fields"]

# The RQ queue the workers listen on.
QUEUE_NAME = "cnnlab-training"
JOB = KEY + "job:"
ACTIVE_KEY = KEY + "jobs:active"
QUEUED_KEY = KEY + "jobs:queued"
WORKERS_KEY = KEY + "workers"
ACTIVE_SESSION_KEY = KEY + "jobs:active:s:"
ACTIVE_ADDRESS_KEY = KEY + "jobs:active:a:"


def job_key(job_id: str) -> str:
    return JOB + job_id


def records_key(job_id: str) -> str:
    return JOB + job_id + ":records"


def channel(job_id: str) -> str:
    return WAKE + "job:" + job_id


def seen_key(session: str) -> str:
    return KEY + "seen:" + session


def session_jobs_key(session: str) -> str:
    return KEY + "jobs:s:" + session


def message_json(message: tuple[str, dict[str, Any]] | None) -> str:
    return "" if message is None else json.dumps([message[0], message[1] or {}])


def decode(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def npy(array: np.ndarray) -> bytes:
    """Weights as stored: np.save's bytes (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def queued_fields(job: Job, settings: Settings) -> dict[str, Any]:
    """A new job's hash. Its limits are the submitting web process's settings: the worker
    that trains it applies them."""
    limits = {"time_cap": settings.job_time_cap_seconds, "abandon": settings.job_abandon_seconds,
              "ttl": settings.job_ttl_seconds}
    return {"id": job.id, "session": job.session, "address": job.address or "", "spec": job.spec.model_dump_json(),
            "limits": json.dumps(limits), "status": "queued", "created": repr(job.created), "version": 0,
            "metrics": "{}", "wver": 0, "rgen": 0}


def finished_fields(job: Job) -> dict[str, Any]:
    """The hash of a job finished elsewhere (a model loaded from a file), weights included."""
    return {"id": job.id, "session": job.session, "address": "", "spec": job.spec.model_dump_json(),
            "status": job.status, "created": repr(job.created), "started": repr(job.started or job.created),
            "finished": repr(job.finished or time.time()), "version": 1, "message": message_json(job._message),
            "metrics": json.dumps(job.metrics), "filters": json.dumps(job.filters),
            "weights": npy(job.model.flat_params), "wver": 1, "rgen": 0}


def live_workers(r: redis.Redis) -> int:
    """Workers whose entry has not expired (each renews its own every ~2 s)."""
    return int(r.zcount(WORKERS_KEY, time.time(), "+inf"))


# Shared by the scripts: forget job ARGV-id as unfinished (KEYS[1] is its hash).
_LEAVE = """
local function leave(id, hash)
  local session = redis.call('HGET', hash, 'session')
  local address = redis.call('HGET', hash, 'address')
  redis.call('SREM', 'cnnlab:jobs:active', id)
  redis.call('ZREM', 'cnnlab:jobs:queued', id)
  if session then redis.call('SREM', 'cnnlab:jobs:active:s:' .. session, id) end
  if address and address ~= '' then redis.call('SREM', 'cnnlab:jobs:active:a:' .. address, id) end
end
local function bump(hash, chan)
  local v = redis.call('HINCRBY', hash, 'version', 1)
  redis.call('PUBLISH', chan, v)
  return v
end
local function finished(st)
  return (not st) or st == 'done' or st == 'stopped' or st == 'failed'
end
"""

# KEYS: job hash, active, active:s:<sess>, active:a:<addr> (or ''), queued, jobs:s:<sess>
# ARGV: id, max per session, max per address (0: no address), max queued, live workers,
#       created, session list ttl (ms), then field/value pairs of the new hash
# Returns {0} (accepted), {1, n} (session cap), {2, n} (address cap), {3, running, queued}.
_SUBMIT = _LEAVE + """
local id = ARGV[1]
local function clean(set)
  for _, m in ipairs(redis.call('SMEMBERS', set)) do
    if finished(redis.call('HGET', 'cnnlab:job:' .. m, 'status')) then
      redis.call('SREM', set, m)
    end
  end
end
clean(KEYS[2])
for _, m in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  if redis.call('HGET', 'cnnlab:job:' .. m, 'status') ~= 'queued' then redis.call('ZREM', KEYS[5], m) end
end
local mine = redis.call('SCARD', KEYS[3])
if mine >= tonumber(ARGV[2]) then clean(KEYS[3]); mine = redis.call('SCARD', KEYS[3]) end
if mine >= tonumber(ARGV[2]) then return {1, mine} end
if tonumber(ARGV[3]) > 0 then
  clean(KEYS[4])
  local theirs = redis.call('SCARD', KEYS[4])
  if theirs >= tonumber(ARGV[3]) then return {2, theirs} end
end
local queued = redis.call('ZCARD', KEYS[5])
local running = redis.call('SCARD', KEYS[2]) - queued
if queued >= tonumber(ARGV[4]) and queued + running >= tonumber(ARGV[5]) then return {3, running, queued} end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('SADD', KEYS[2], id)
redis.call('SADD', KEYS[3], id)
if tonumber(ARGV[3]) > 0 then redis.call('SADD', KEYS[4], id) end
redis.call('ZADD', KEYS[5], ARGV[6], id)
redis.call('ZADD', KEYS[6], ARGV[6], id)
redis.call('PEXPIRE', KEYS[6], ARGV[7])
return {0}
"""

# KEYS: job hash, records. ARGV: id, channel, status, message JSON ('' = keep), now, ttl (ms),
# lost_before ('' or a wall time: finish only a running job whose heartbeat is older), expect
# ('' or the only status it may have now), then field/value pairs. Returns 1 when this call
# finished the job, 0 when it had ended already (or was not as expected).
_FINISH = _LEAVE + """
local st = redis.call('HGET', KEYS[1], 'status')
if finished(st) then return 0 end
if ARGV[7] ~= '' then
  if st ~= 'running' then return 0 end
  if tonumber(redis.call('HGET', KEYS[1], 'heartbeat') or '0') >= tonumber(ARGV[7]) then return 0 end
end
if ARGV[8] ~= '' and st ~= ARGV[8] then return 0 end
if #ARGV >= 9 then
  local fields = {}
  for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', KEYS[1], unpack(fields))
end
local current = redis.call('HGET', KEYS[1], 'message')
if ARGV[4] ~= '' and ((not current) or current == '' or ARGV[3] == 'failed') then
  redis.call('HSET', KEYS[1], 'message', ARGV[4])
end
if ARGV[3] == 'done' then redis.call('HDEL', KEYS[1], 'message') end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finished', ARGV[5])
leave(ARGV[1], KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
bump(KEYS[1], ARGV[2])
return 1
"""

# KEYS: job hash. ARGV: channel, now, worker host, horse pid. Returns 1 when the job was queued
# and now runs.
_START = _LEAVE + """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running', 'started', ARGV[2], 'heartbeat', ARGV[2], 'host', ARGV[3],
           'pid', ARGV[4])
redis.call('ZREM', 'cnnlab:jobs:queued', redis.call('HGET', KEYS[1], 'id'))
bump(KEYS[1], ARGV[1])
return 1
"""

# KEYS: job hash, records. ARGV: channel, records mode ('append', 'replace', 'none'), n records,
# the records, then field/value pairs (a 'weights' field also bumps 'wver').
# Returns the new version, or -1 when the job no longer runs (stopped as lost, or gone).
_UPDATE = _LEAVE + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return -1 end
local n = tonumber(ARGV[3])
if ARGV[2] == 'replace' then
  redis.call('DEL', KEYS[2])
  redis.call('HINCRBY', KEYS[1], 'rgen', 1)
end
if n > 0 then
  local recs = {}
  for i = 4, 3 + n do recs[#recs + 1] = ARGV[i] end
  redis.call('RPUSH', KEYS[2], unpack(recs))
end
if #ARGV > 3 + n then
  local fields = {}
  for i = 4 + n, #ARGV do
    fields[#fields + 1] = ARGV[i]
    if (i - 4 - n) % 2 == 0 and ARGV[i] == 'weights' then redis.call('HINCRBY', KEYS[1], 'wver', 1) end
  end
  redis.call('HSET', KEYS[1], unpack(fields))
end
return bump(KEYS[1], ARGV[1])
"""

# KEYS: job hash. ARGV: now. The horse's heartbeat, only while the job runs (a finished or
# expired hash is never brought back).
_HEARTBEAT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'heartbeat', ARGV[1])
return 1
"""

# KEYS: job hash. ARGV: channel, message JSON, now. A running job is asked to stop (its
# message kept if it has one). Returns the status it had.
_ASK_STOP = _LEAVE + """
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'running' then return st or '' end
if redis.call('HGET', KEYS[1], 'stop') ~= '1' then
  redis.call('HSET', KEYS[1], 'stop', '1', 'stop_at', ARGV[3])
  local current = redis.call('HGET', KEYS[1], 'message')
  if (not current) or current == '' then redis.call('HSET', KEYS[1], 'message', ARGV[2]) end
  bump(KEYS[1], ARGV[1])
end
return st
"""


class Scripts:
    """The scripts above, registered on one client (EVALSHA, loaded again after a restart)."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.submit = r.register_script(_SUBMIT)
        self.finish_script = r.register_script(_FINISH)
        self.start = r.register_script(_START)
        self.update = r.register_script(_UPDATE)
        self.heartbeat = r.register_script(_HEARTBEAT)
        self.ask_stop = r.register_script(_ASK_STOP)

    def finish(self, job_id: str, status: str, message: tuple[str, dict[str, Any]] | None, ttl_seconds: float,
               fields: dict[str, Any] | None = None, *, lost_before: float | None = None,
               expect: str | None = None) -> bool:
        """End the job as ``status`` (once: False when it had ended already)."""
        pairs: list[Any] = []
        for name, value in (fields or {}).items():
            pairs += [name, value]
        args = [job_id, channel(job_id), status, message_json(message), repr(time.time()),
                max(1, int(ttl_seconds * 1000)), "" if lost_before is None else repr(lost_before), expect or "", *pairs]
        return bool(self.finish_script(keys=[job_key(job_id), records_key(job_id)], args=args))
