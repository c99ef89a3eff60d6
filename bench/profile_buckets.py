#!/usr/bin/env python3
"""Groups a `perf record -g` profile of the `wire` program into a few buckets, per role.

    python3 bench/profile_buckets.py PERF_DATA ROLE [ROLE...] [--top N]

A ROLE is a process name (`comm`) the `wire` program gives its measured processes: ev-pub,
ev-sub, rtt-client, rtt-server, fan-pub, fan-sub, stall-pub, stall-sub. Each sample goes to the
bucket of the first frame, from the leaf towards the root, that a rule below matches, the
specific buckets first (see GROUPS): a `malloc` called by the encoder is the allocator's; a
`memcpy` matches nothing and goes to its caller; a kernel frame goes to the system call above
it. Samples whose stack matches no rule are "other".
Prints a Markdown table of percentages of each role's samples (weighted by period), and with
`--top N` the N hottest leaf symbols of the generic buckets, to refine the rules.
"""

import re
import subprocess
import sys
from collections import Counter, defaultdict

# Groups of (bucket, regex on "symbol [dso]"). The groups are tried in order; within a group
# the frames are scanned from the leaf towards the root and the first frame that a rule of the
# group matches decides. So a specific bucket anywhere in the stack wins over the generic ones
# ("meshbus, other", the benchmark, the runtime, the kernel), which match nearly every stack.
GROUPS = [
    # Issue 17's sealed records; matches nothing in the code before it. The cipher's own code
    # (ring's ChaCha20 and Poly1305) first, then the record layer around it (copies into the
    # record, zero-filling the plaintext buffer, the allocations it makes, snow's checks),
    # which makes no system call.
    [
        ("seal / open: ChaCha20-Poly1305 (ring)", r"ring_core_\w+|\bring::aead|ChaCha20_ctr32|[Pp]oly1305|chacha20_poly1305"),
        ("seal / open: record layer (copies, zero-fill, snow)", r"Sealer::seal_(frames|one)|Opener::open|SealedReader::open|snow::"),
    ],
    [
        ("allocator", r"^(malloc|free|realloc|calloc|cfree\S*|__libc_(malloc|free|realloc|calloc)|_int_(malloc|free|realloc)|_mid_memalign\S*|malloc_consolidate|tcache_\w+|unlink_chunk\S*|alloc_perturb|__rust_(alloc|dealloc|realloc)|__rdl_\w+) \[|^alloc::alloc::|^alloc::raw_vec::|RawVec.*::(grow|reserve)"),
        ("clock reads", r"^(__vdso_clock_gettime|clock_gettime\S*) \[|Instant>::(now|elapsed)|Timespec>::(now|sub_timespec)"),
        ("subscription hand-off (deliver + flume)", r"flume::|registry::deliver_remote|PeerEvents as .*EventSink>::deliver"),
        ("task wake-ups", r"^(tokio|flume|futures|<tokio|<flume|<futures|<alloc::sync::Arc<tokio)\S*.*::(wake|wake_by_ref|wake_by_val|wake_arc_raw|wake_by_ref_arc_raw|wake_all|wake0|schedule|schedule_task|notify_one|notify_waiters|notify_locked|notify_with_strategy)(\b|::\{)|^tokio::runtime::task::(waker|state)::|AtomicWaker::wake"),
        ("lane hand-off (mpsc + semaphore)", r"tokio::sync::(mpsc|batch_semaphore|semaphore)|PeerHandle::(try_)?queue"),
        ("encode", r"rmp_serde::encode|rmp::encode|wire::frame::encode|::encode\w*|Serialize>::serialize|\bserialize_\w+|frame_headers"),
        ("decode", r"rmp_serde::decode|rmp::decode|wire::frame::decode|::decode\w*|Deserialize\w*>::deserialize|deserialize_\w+|Visitor"),
        ("writer / send syscall", r"\b(__sys_sendto|__sys_sendmsg|___sys_sendmsg|sock_sendmsg|tcp_sendmsg\w*|__x64_sys_(write|writev|sendto|sendmsg)|ksys_write|do_writev|vfs_writev?|unix_stream_sendmsg)\b|^(__send|send|sendmsg|sendto|__libc_send\w*|writev|__writev|__write|write|__libc_write) \[|poll_write\w*|write_vectored|write_batch|write_counted|FrameWriter"),
        ("reader / recv syscall", r"\b(__sys_recvfrom|__sys_recvmsg|___sys_recvmsg|sock_recvmsg|tcp_recvmsg\w*|__x64_sys_(read|readv|recvfrom|recvmsg)|ksys_read|vfs_readv?|unix_stream_recvmsg|unix_stream_read_generic)\b|^(__recv|recv|recvfrom|recvmsg|__libc_recv\w*|readv|__read|read|__libc_read) \[|poll_read\w*|read_buf|FrameReader|read_frames?"),
    ],
    [
        # Issue 14's event credit and admission; matches nothing in the code before it.
        ("credit and admission", r"bus::admit::|::credit::|credit::Receipt|SendWindow|Inbound::receipt|subscription::queue::"),
        ("timeouts and cancellation (timers, tokens)", r"^<?tokio::time::|^<?tokio::runtime::time::(?!Driver::park)|cancellation_token|CancellationToken|WaitForCancellation"),
        ("tracing spans", r"^<?tracing::"),
        ("publish / dispatch logic (routing snapshot, checks, request table)", r"PublishFuture|Publish<E>|arc_swap::|refuses_work|NodeShared::routes|is_available|Inbound::on_\w+|Dispatch for|SendCommand|ResponseFuture|routed_call|outbound::|bus::inbound::|bus::remote::|proto::requests::|ReplyTo|PeerHandle::(complete|give_up|register)|FnCommand|oneshot::|hashbrown::|core::hash::"),
        ("meshbus, other", r"meshbus"),
        ("benchmark's own code", r"\bwire::main::\{\{closure|\bwire::(events|rtt|fanout|stall|msg|raw)::"),
    ],
    [("tokio runtime (scheduler, I/O and time drivers)", r"tokio::|mio::|\b(epoll_wait|do_epoll_wait|ep_poll|__x64_sys_epoll_wait|epoll_pwait)\b")],
    [("kernel, other", r"\[kernel")],
]
COMPILED = [[(b, re.compile(r)) for b, r in group] for group in GROUPS]
ORDER = [b for group in GROUPS for b, _ in group] + ["other"]


def classify(frames):
    for group in COMPILED:
        for frame in frames:
            for bucket, rx in group:
                if rx.search(frame):
                    return bucket
    return "other"


def samples(path, comms):
    """Yields (comm, period, frames leaf first) of the samples of `comms`."""
    cmd = ["perf", "script", "-i", path, "--comms", ",".join(comms), "-F", "comm,period,ip,sym,dso"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    comm, period, frames = None, 0, []
    for line in out.splitlines() + [""]:
        if not line.strip():
            if comm is not None:
                yield comm, period, frames
            comm, period, frames = None, 0, []
        elif not line.startswith((" ", "\t")):
            parts = line.split()
            comm = parts[0]
            period = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 1
        else:
            # "    ffffffff81234567 tcp_sendmsg+0x1c ([kernel.kallsyms])"
            m = re.match(r"\s*[0-9a-f]+\s+(.*?)(?:\+0x[0-9a-f]+)?\s+\((.*)\)\s*$", line)
            if m:
                frames.append(f"{m.group(1)} [{m.group(2)}]")


def main():
    args = [a for a in sys.argv[1:]]
    top = 0
    if "--top" in args:
        i = args.index("--top")
        top = int(args[i + 1])
        del args[i : i + 2]
    if len(args) < 2:
        print(__doc__)
        sys.exit(2)
    path, comms = args[0], args[1:]
    weights = {c: Counter() for c in comms}
    unmatched = defaultdict(Counter)
    for comm, period, frames in samples(path, comms):
        if comm not in weights:
            continue
        bucket = classify(frames)
        weights[comm][bucket] += period
        if bucket in ("other", "meshbus, other", "kernel, other") and frames:
            unmatched[comm][f"{bucket}: {frames[0]}"] += period
    print("| bucket | " + " | ".join(comms) + " |")
    print("|---|" + "---|" * len(comms))
    for b in ORDER:
        cells = []
        for c in comms:
            total = sum(weights[c].values()) or 1
            cells.append(f"{100.0 * weights[c][b] / total:.1f}%")
        if any(cell != "0.0%" for cell in cells):
            print(f"| {b} | " + " | ".join(cells) + " |")
    print("| samples (weighted) | " + " | ".join(str(sum(weights[c].values())) for c in comms) + " |")
    if top:
        for c in comms:
            total = sum(weights[c].values()) or 1
            print(f"\n{c}: hottest leaves of the generic buckets")
            for frame, w in unmatched[c].most_common(top):
                print(f"  {100.0 * w / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
