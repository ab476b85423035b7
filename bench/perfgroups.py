#!/usr/bin/env python3
"""perfgroups.py: groups `perf script` call stacks of usersvc by what the time
was spent on (net/http, SQLite, the access log, JSON, GC, ...), and the
kernel part by what it was for (socket writes, fsync, SQLite's preads, ...).

    perf script -i perf.data | bench/perfgroups.py [REQS_PER_SEC SECONDS HZ]

With the request rate, the recorded seconds and the sampling frequency it
also prints microseconds of CPU per request for each group.
"""
import collections
import re
import sys

FRAME = re.compile(r'\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$')


def samples(lines):
    """Yields each sample's frames, leaf first, as (symbol, is_kernel)."""
    cur = []
    for line in lines:
        if not line.strip():
            if cur:
                yield cur
            cur = []
            continue
        if line[0] not in ' \t':
            continue
        m = FRAME.match(line)
        if m:
            sym, dso = re.sub(r'\+0x[0-9a-f]+$', '', m.group(1)), m.group(2)
            cur.append((sym, 'kernel' in dso or dso.startswith('[k')))
    if cur:
        yield cur


JSON_MAIN = ('main.appendUser', 'main.appendGoal', 'main.appendString', 'main.appendNullString',
             'main.writeObject', 'main.writeArray', 'main.writeJSON', 'main.writeCacheable',
             'main.writeUser', 'main.decodeJSONObject', 'main.decodeUserInput', 'main.decodeFields',
             'main.decodeField')
SQLITE = 'SQLite (modernc) + database/sql'
SLOG = 'access log (slog)'
GC = 'GC'
# Groups that never call back into net/http: a sample with one of their
# frames anywhere is theirs (malloc and syscalls under them included).
OWNERS = (SLOG, 'metrics (prometheus)', SQLITE, 'request id (crypto/rand)', 'ETag')


def group(sym):
    if sym.startswith(('modernc.org/', 'database/sql', 'github.com/jmoiron/sqlx', 'main.(*store)', 'main.runSavepoint')):
        return SQLITE
    if sym.startswith(('log/slog', 'log.')):
        return SLOG
    if sym.startswith('github.com/prometheus'):
        return 'metrics (prometheus)'
    if sym.startswith(('encoding/json', 'github.com/invopop')) or sym.startswith(JSON_MAIN):
        return 'JSON read/write + validation'
    if sym.startswith(('main.resourceETag', 'main.listETag', 'main.bodyHash', 'main.noneMatch', 'main.entityTags', 'hash/')):
        return 'ETag'
    if sym.startswith(('main.newRequestID', 'crypto/rand', 'crypto/internal')):
        return 'request id (crypto/rand)'
    if sym.startswith(('runtime.gcBgMarkWorker', 'runtime.gcDrain', 'runtime.bgsweep', 'runtime.bgscavenge',
                       'runtime.gcAssistAlloc', 'runtime.markroot', 'runtime.scanobject', 'runtime.gcStart',
                       'runtime.sweepone', 'runtime.(*gcWork)', 'runtime.gcMarkDone', 'runtime.gcMarkTermination',
                       'runtime.wbBuf', 'runtime.bulkBarrier')):
        return GC
    if sym.startswith(('net/http', 'net.', 'net/textproto', 'net/url', 'bufio.', 'internal/poll', 'mime')):
        return 'net/http'
    if sym.startswith(('runtime.schedule', 'runtime.findRunnable', 'runtime.netpoll', 'runtime.park_m', 'runtime.mcall',
                       'runtime.goexit0', 'runtime.sysmon', 'runtime.mstart', 'runtime.stopm', 'runtime.notesleep',
                       'runtime.futexsleep')):
        return 'Go scheduler / netpoll'
    if sym.startswith('main.'):
        return 'handlers + middleware (main)'
    return None


def classify(frames):
    found = [group(s) for s, k in frames if not k]
    if any(s.startswith(('runtime.gcAssistAlloc', 'runtime.gcBgMarkWorker', 'runtime.bgsweep', 'runtime.bgscavenge'))
           for s, _ in frames):
        return GC
    for owner in OWNERS:
        if owner in found:
            return owner
    for g in found:
        if g:
            return g
    return 'runtime, other' if found else 'kernel, no Go frame'


def kernel_purpose(frames):
    names = [s for s, _ in frames]
    text = ' '.join(names)
    if 'do_fsync' in text or 'vfs_fsync' in text:
        return 'fsync'
    if any(s.startswith('log/slog') for s in names):
        return 'write(2) of the access log'
    for s, k in frames:
        if k:
            continue
        if s.startswith('modernc.org/libc.X'):
            sysent = [x for x in names if x.startswith(('__x64_sys_', '__do_sys_'))]
            return 'SQLite file I/O: ' + (sysent[-1].split('sys_', 1)[1] if sysent else s.split('.X', 1)[1])
        if s.startswith('internal/poll.(*FD).Read'):
            return 'socket read'
        if s.startswith('internal/poll.(*FD).Write'):
            return 'socket write (with loopback delivery to wrk)'
        if s.startswith('runtime.netpoll'):
            return 'epoll'
        if s.startswith(('runtime.futex', 'runtime.usleep', 'runtime.stopm', 'runtime.notewakeup', 'runtime.wakep')):
            return 'futex / thread switches'
    return 'other (interrupts, page faults, ...)'


def main():
    rate = seconds = hz = None
    if len(sys.argv) == 4:
        rate, seconds, hz = (float(a) for a in sys.argv[1:])
    total = 0
    groups, groups_k, kernel, leaves = (collections.Counter() for _ in range(4))
    for frames in samples(sys.stdin):
        total += 1
        g = classify(frames)
        groups[g] += 1
        if frames[0][1]:
            groups_k[g] += 1
            kernel[kernel_purpose(frames)] += 1
        leaves[frames[0][0]] += 1
    if not total:
        sys.exit('no samples')

    def us(n):
        return ' %6.1f us' % (n / hz / (rate * seconds) * 1e6) if rate else ''

    print('%d samples' % total + (', %.0f%% of a core, %.1f us of CPU a request' % (
        100 * total / hz / seconds, total / hz / (rate * seconds) * 1e6) if rate else ''))
    print('by group (the kernel time inside each in brackets):')
    for g, n in groups.most_common():
        print('  %5.1f%%%s  [kernel %4.1f%%]  %s' % (100 * n / total, us(n), 100 * groups_k[g] / total, g))
    print('kernel time by purpose:')
    for g, n in kernel.most_common(10):
        print('  %5.1f%%%s  %s' % (100 * n / total, us(n), g))
    print('top leaf functions:')
    for g, n in leaves.most_common(15):
        print('  %5.1f%%  %s' % (100 * n / total, g))


if __name__ == '__main__':
    main()
