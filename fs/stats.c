/*
 * Live counters of a mount and the text `npyfs stats` prints (the mount
 * root's user.npyfs.stats xattr). Contract in stats.h.
 *
 * The counters in struct fs_counters are bumped by the FUSE handlers; the
 * cache keeps its own (cache_get_stats()). The per-member part walks every
 * archive opened so far (vfs_foreach()) and reads each member's index
 * frontier and damage state, all of which are safe to read concurrently.
 *
 * The result must fit an xattr value (64 KiB): rows are rendered one at a
 * time into a small buffer and appended while they fit with room left for
 * the closing lines; once one does not, every later member is only counted.
 *
 * Indexing progress: a first walk over the opened archives counts the
 * members that get a full pass (indexer_indexable()) and how many have
 * had it, and the bytes still to check, from each member's pass progress
 * (pass_start_ns and pass_done, atomics the pass publishes); the archives
 * of a directory source not opened yet are only counted, with their sizes
 * on disk (vfs_units()): their members are not known before they open.
 */
#define _GNU_SOURCE

#include "stats.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "archive.h"
#include "bsrc.h"
#include "cache.h"
#include "escape.h"
#include "fs.h"
#include "indexer.h"
#include "mount.h"
#include "net.h"
#include "parked.h"
#include "vfs.h"

/* Bytes kept free for the closing lines (omitted count, JSON brackets). */
#define TAIL_RESERVE 128
/* Longest member name shown in the text form; longer ones end in "...". */
#define NAME_SHOWN_MAX 120
/* One rendered row: a name of up to NAME_SHOWN_MAX bytes shown as \xNN
 * (4x), or a JSON name escaped up to 6x, plus the numbers. */
#define ROW_MAX (6 * 4096 + 512)

struct out {
    const struct options *opts; /* borrowed: the mount's (verify=) */
    char *buf;          /* borrowed: the caller's buffer */
    size_t size, len;
    bool json;
    bool full;          /* a row did not fit: later members are only counted */
    bool arch_open;     /* JSON: an archive object is open */
    size_t narchives;   /* archives emitted */
    size_t nmembers;    /* members emitted in the current archive */
    uint64_t spacing;   /* the current archive's access point spacing */
    uint64_t omitted;   /* members not listed */
    uint64_t unverified; /* members served before their full check (counted first) */
    int name_width;     /* text: width of the MEMBER column */
    int64_t now_ns;     /* CLOCK_MONOTONIC when the stats were taken */
    char row[ROW_MAX];
};

/* Append s if it fits with TAIL_RESERVE left (tail: may use the reserve). */
static bool put(struct out *o, const char *s, size_t n, bool tail)
{
    size_t keep = tail ? 1 : TAIL_RESERVE + 1;

    if (o->len + n + keep > o->size)
        return false;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
    return true;
}

static __attribute__((format(printf, 3, 4))) bool putf(struct out *o, bool tail,
                                                       const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(o->row, sizeof(o->row), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(o->row))
        return false;
    return put(o, o->row, (size_t)n, tail);
}

/* "117.7 MiB": a human reading next to an exact byte count. */
static void human(uint64_t v, char *out, size_t size)
{
    static const char units[][4] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double d = (double)v;
    int u = 0;

    while (d >= 1024 && u < 5) {
        d /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, size, "%" PRIu64 " B", v);
    else
        snprintf(out, size, "%.1f %s", d, units[u]);
}

/* Text form of a name (escaped by escape_text(): nothing from an
 * archive reaches a terminal raw), cut at NAME_SHOWN_MAX bytes. out has room
 * for 4 * NAME_SHOWN_MAX + 4 bytes. */
static size_t show_name(const char *s, size_t len, char *out)
{
    size_t n = len < NAME_SHOWN_MAX ? len : NAME_SHOWN_MAX;

    n = escape_text(out, 4 * NAME_SHOWN_MAX + 1, s, n, false);
    if (len > NAME_SHOWN_MAX)
        n += (size_t)sprintf(out + n, "...");
    out[n] = '\0';
    return n;
}

/* What the index of m covers: indexed bytes, points, whether the whole
 * member was decoded once (the index then covers all of it). */
static void coverage(struct archive_member *m, uint64_t *indexed, size_t *points, bool *complete)
{
    *indexed = 0;
    *points = 0;
    *complete = false;
    if (m->kind != ARCHIVE_DEFLATE || !archive_located(m) || !m->ix)
        return;
    *points = dfx_index_points(m->ix);
    *complete = dfx_index_total(m->ix) != UINT64_MAX;
    *indexed = *complete ? m->size : dfx_index_frontier(m->ix);
}

/* m's verdict, once it is final (a remote zip member's local header may
 * not have been read yet: archive_located()). */
static int unsupported(struct archive_member *m)
{
    return archive_located(m) ? m->unsupported : 0;
}

/* The full pass over m running now: bytes checked (*done), bytes per
 * second so far (*rate; 0 in its first 50 ms, too short to tell), seconds
 * to go (*eta, rounded up: "0 s" only once nothing is left; -1 while the
 * rate is unknown). False if no pass runs. */
static bool pass_progress(const struct out *o, struct archive_member *m, uint64_t *done,
                          uint64_t *rate, int64_t *eta)
{
    int64_t start = atomic_load(&m->pass_start_ns);
    double secs;

    if (start == 0)
        return false;
    *done = atomic_load_explicit(&m->pass_done, memory_order_relaxed);
    if (*done > m->size)
        *done = m->size;
    secs = (double)(o->now_ns - start) / 1e9;
    *rate = secs > 0.05 ? (uint64_t)((double)*done / secs) : 0;
    *eta = *rate ? (int64_t)((m->size - *done + *rate - 1) / *rate) : -1;
    return true;
}

/* Was the member's whole CRC-32 checked? A stored member's by the read that
 * reached its end; any member's by the full pass that publishes its chunk
 * CRC table (also loaded with a saved index built by such a pass). */
static bool crc_checked(struct archive_member *m)
{
    return atomic_load(&m->verified) || atomic_load(&m->crcs) != NULL;
}

/* Is m served before a full pass has checked it? It has a CRC to check (a
 * deflate member, a zip's stored member) that has not been checked yet, and
 * the mount's verify= does not make its open wait for that check. */
static bool unverified(const struct options *o, const struct archive *a, struct archive_member *m)
{
    if (unsupported(m) || m->is_dir || m->size == 0 || crc_checked(m))
        return false;
    if (m->kind != ARCHIVE_DEFLATE && a->kind != ARCHIVE_ZIP)
        return false; /* a passthrough file: nothing to check it against */
    switch (o->verify) {
    case OPTIONS_VERIFY_STRICT:
        return false;
    case OPTIONS_VERIFY_AUTO:
        return m->size > o->verify_max;
    default:
        return true;
    }
}

static const char *errtext(int err, char *buf, size_t size)
{
    return strerror_r(err, buf, size);
}

/* A word for the kind of damage (JSON). */
static const char *damage_kind(const struct member_damage *dm)
{
    if (dm->changed)
        return "archive_changed";
    switch (dm->d.kind) {
    case DFX_DAMAGE_DATA:
        return "bad_data";
    case DFX_DAMAGE_TRUNCATED:
        return "truncated";
    case DFX_DAMAGE_SIZE:
        return "size_mismatch";
    case DFX_DAMAGE_CRC:
        return "crc_mismatch";
    case DFX_DAMAGE_CHUNK_CRC:
        return "chunk_crc_mismatch";
    default:
        return "error";
    }
}


/* The line under a member whose full pass runs now. */
static void text_pass(struct out *o, struct archive_member *m, uint64_t done, uint64_t rate,
                      int64_t eta)
{
    char h1[32], h2[32], h3[32], left[32] = "ETA unknown";
    bool waiting = atomic_load_explicit(&m->pass_waiting, memory_order_relaxed);

    human(done, h1, sizeof(h1));
    human(m->size, h2, sizeof(h2));
    human(rate, h3, sizeof(h3));
    if (eta >= 0)
        snprintf(left, sizeof(left), "ETA %" PRId64 " s", eta);
    if (!putf(o, false, "    indexing pass: %s of %s checked (%.1f%%), %s/s, %s%s\n", h1, h2,
              m->size ? 100.0 * (double)done / (double)m->size : 100.0, h3, left,
              waiting ? " (waiting while reads decode a member for the first time)" : ""))
        o->full = true;
}

static void text_member(struct out *o, const struct archive *a, struct archive_member *m)
{
    char name[4 * NAME_SHOWN_MAX + 8], idx[48], state[256];
    struct member_damage dm;
    uint64_t indexed;
    size_t points;
    bool complete;
    uint64_t done, rate;
    int64_t eta;
    bool passing = pass_progress(o, m, &done, &rate, &eta);

    show_name(m->name, m->name_len, name);
    archive_member_damage(a, m, &dm);
    coverage(m, &indexed, &points, &complete);
    if (passing && m->size)
        snprintf(idx, sizeof(idx), "pass %.1f%%", 100.0 * (double)done / (double)m->size);
    else if (m->kind != ARCHIVE_DEFLATE || !archive_located(m) || !m->ix)
        snprintf(idx, sizeof(idx), "-");
    else if (m->size <= o->spacing && !complete)
        snprintf(idx, sizeof(idx), "- (small)"); /* never gets a point past its start */
    else if (complete || m->size == 0)
        snprintf(idx, sizeof(idx), "100%% (%zu pts)", points);
    else
        snprintf(idx, sizeof(idx), "%.1f%% (%zu pts)", 100.0 * (double)indexed / (double)m->size,
                 points);
    if (unsupported(m))
        snprintf(state, sizeof(state), "unsupported: %s", m->why ? m->why : "");
    else if (dm.d.error)
        archive_damage_text(&dm, state, sizeof(state));
    else if (crc_checked(m))
        snprintf(state, sizeof(state), "ok, crc checked");
    else if (unverified(o->opts, a, m))
        snprintf(state, sizeof(state), "unverified (readable before its full check)");
    else
        snprintf(state, sizeof(state), "ok");
    if (!putf(o, false, "  %-*s  %-8s %14" PRIu64 " %14" PRIu64 "  %-18s %s\n", o->name_width,
              name, m->method, m->size, m->stored_size, idx, state)) {
        o->full = true;
        o->omitted++;
        return;
    }
    if (passing)
        text_pass(o, m, done, rate, eta);
}

static bool json_str(struct out *o, const char *s, size_t len, bool tail)
{
    size_t n = escape_json(NULL, 0, s, len);
    char *tmp;
    bool ok;

    if (n < sizeof(o->row)) {
        escape_json(o->row, sizeof(o->row), s, len);
        return put(o, o->row, n, tail);
    }
    tmp = malloc(n + 1);
    if (!tmp)
        return false;
    escape_json(tmp, n + 1, s, len);
    ok = put(o, tmp, n, tail);
    free(tmp);
    return ok;
}

/* A member's "pass" key and the end of its object: the full pass running
 * now, or null. */
static bool json_pass(struct out *o, struct archive_member *m)
{
    uint64_t done, rate;
    int64_t eta;
    char left[32] = "null";

    if (!pass_progress(o, m, &done, &rate, &eta))
        return putf(o, false, ",\"pass\":null}");
    if (eta >= 0)
        snprintf(left, sizeof(left), "%" PRId64, eta);
    return putf(o, false, ",\"pass\":{\"done\":%" PRIu64 ",\"size\":%" PRIu64
                ",\"rate\":%" PRIu64 ",\"eta_seconds\":%s,\"waiting_for_reads\":%s}}",
                done, m->size, rate, left,
                atomic_load_explicit(&m->pass_waiting, memory_order_relaxed) ? "true" : "false");
}

/* ,"damage":{...}: where reads start failing, the errno's text, the kind
 * and its details, and the text stats shows. */
static bool json_damage(struct out *o, const struct member_damage *dm, const char *error,
                        const char *text)
{
    const struct dfx_damage *d = &dm->d;
    bool ok = putf(o, false, ",\"damage\":{\"from\":%" PRIu64 ",\"error\":\"%s\",\"kind\":\"%s\"",
                   d->from, error, damage_kind(dm));

    if (ok && !dm->changed && (d->kind == DFX_DAMAGE_DATA || d->kind == DFX_DAMAGE_TRUNCATED))
        ok = putf(o, false, ",\"compressed_offset\":%" PRIu64, d->in);
    if (ok && !dm->changed && d->kind == DFX_DAMAGE_SIZE)
        ok = putf(o, false, ",\"expected_size\":%" PRIu64 ",\"decoded_size\":%" PRIu64,
                  d->expected, d->actual);
    if (ok && !dm->changed && d->kind == DFX_DAMAGE_CHUNK_CRC)
        ok = putf(o, false, ",\"chunk\":%" PRIu64, d->chunk);
    return ok && putf(o, false, ",\"text\":") && json_str(o, text, strlen(text), false) &&
           putf(o, false, "}");
}

static void json_member(struct out *o, const struct archive *a, struct archive_member *m)
{
    size_t mark = o->len, points;
    uint64_t indexed;
    bool complete, ok;
    char ebuf[96], text[256];
    struct member_damage dm;

    archive_member_damage(a, m, &dm);
    archive_damage_text(&dm, text, sizeof(text));
    coverage(m, &indexed, &points, &complete);
    ok = putf(o, false, "%s{\"name\":", o->nmembers ? "," : "") &&
         json_str(o, m->name, m->name_len, false) &&
         putf(o, false,
              ",\"method\":\"%s\",\"size\":%" PRIu64 ",\"stored_size\":%" PRIu64
              ",\"indexed_bytes\":%" PRIu64 ",\"index_points\":%zu,\"index_complete\":%s"
              ",\"crc_checked\":%s,\"unverified\":%s,\"unsupported\":",
              m->method, m->size, m->stored_size, indexed, points, complete ? "true" : "false",
              crc_checked(m) ? "true" : "false",
              unverified(o->opts, a, m) ? "true" : "false") &&
         (unsupported(m) ? json_str(o, m->why ? m->why : "", m->why ? strlen(m->why) : 0, false)
                         : putf(o, false, "null")) &&
         (dm.d.error ? json_damage(o, &dm, errtext(-dm.d.error, ebuf, sizeof(ebuf)), text)
              : putf(o, false, ",\"damage\":null")) &&
         json_pass(o, m);
    if (!ok) {
        o->len = mark; /* drop the partial object */
        o->buf[mark] = '\0';
        o->full = true;
        o->omitted++;
        return;
    }
    o->nmembers++;
}

/* A remote archive's line of counters (text), or its "remote" object
 * (JSON: null for a local archive). */
static bool remote_head(struct out *o, struct archive *a)
{
    struct remote_stats rs;
    char h[32];

    if (!bsrc_remote_stats(a->bs, &rs))
        return !o->json || putf(o, false, ",\"remote\":null");
    if (!o->json) {
        human(rs.bytes, h, sizeof(h));
        return putf(o, false,
                    "  remote: %" PRIu64 " requests, %" PRIu64 " bytes fetched (%s), %" PRIu64
                    " retries, %" PRIu64 " failures, %" PRIu64 " in flight (connections in "
                    "use); blocks %" PRIu64 " hit, %" PRIu64 " missed, %" PRIu64
                    " fetched ahead\n",
                    rs.requests, rs.bytes, h, rs.retries, rs.failures, rs.in_flight, rs.hits,
                    rs.misses, rs.ahead_blocks);
    }
    return putf(o, false,
                ",\"remote\":{\"requests\":%" PRIu64 ",\"bytes\":%" PRIu64
                ",\"retries\":%" PRIu64 ",\"failures\":%" PRIu64 ",\"in_flight\":%" PRIu64
                ",\"connections\":%" PRIu64 ",\"block_hits\":%" PRIu64
                ",\"block_misses\":%" PRIu64 ",\"ahead_blocks\":%" PRIu64 "}",
                rs.requests, rs.bytes, rs.retries, rs.failures, rs.in_flight, rs.in_flight,
                rs.hits, rs.misses, rs.ahead_blocks);
}

static bool archive_head(struct out *o, struct archive *a)
{
    bool changed = atomic_load(&a->changed);

    if (!o->json) {
        /* the path too: a file in a directory source may have any name */
        size_t n = escape_text(NULL, 0, a->name, strlen(a->name), false);
        char *path = malloc(n + 1);
        bool ok;

        if (!path)
            return false;
        escape_text(path, n + 1, a->name, strlen(a->name), false);
        ok = putf(o, false, "\n%s%s\n", path,
                  changed ? " (changed since mount: reads that need it fail)" : "") &&
             remote_head(o, a) &&
             putf(o, false, "  %-*s  %-8s %14s %14s  %-18s %s\n", o->name_width, "MEMBER",
                  "METHOD", "SIZE", "STORED", "INDEXED", "STATE");
        free(path);
        return ok;
    }
    if (!putf(o, false, "%s{\"path\":", o->narchives ? "," : "") ||
        !json_str(o, a->name, strlen(a->name), false) ||
        !putf(o, false, ",\"changed\":%s", changed ? "true" : "false") || !remote_head(o, a) ||
        !putf(o, false, ",\"members\":["))
        return false;
    o->arch_open = true;
    o->nmembers = 0;
    return true;
}

static void emit_archive(struct archive *a, void *arg)
{
    struct out *o = arg;
    size_t mark = o->len;

    if (o->full || !archive_head(o, a)) {
        o->len = mark;
        o->buf[mark] = '\0';
        o->full = true;
        o->omitted += a->count;
        return;
    }
    o->narchives++;
    o->spacing = a->spacing;
    for (size_t i = 0; i < a->count; i++) {
        if (o->full)
            o->omitted++;
        else if (o->json)
            json_member(o, a, &a->members[i]);
        else
            text_member(o, a, &a->members[i]);
    }
    if (o->json) {
        put(o, "]}", 2, true);
        o->arch_open = false;
    }
}

/* First pass: the MEMBER column's width (text form), and the count of
 * unverified members. */
static void measure_archive(struct archive *a, void *arg)
{
    struct out *o = arg;
    char name[4 * NAME_SHOWN_MAX + 8];

    for (size_t i = 0; i < a->count; i++) {
        int w = (int)show_name(a->members[i].name, a->members[i].name_len, name);
        if (w > o->name_width)
            o->name_width = w;
        if (unverified(o->opts, a, &a->members[i]))
            o->unverified++;
    }
}

/* The network side's totals (mount-wide), for a mount with remote
 * sources: connections open now, requests, bytes, retries, failures, and
 * the remote block cache. */
static void text_net(struct out *o, struct net *net)
{
    struct http_stats hs;
    struct remote_stats rs;
    char h1[32], h2[32], h3[32];

    if (!net)
        return;
    net_stats(net, &hs, &rs);
    human(hs.bytes, h1, sizeof(h1));
    human(rs.cache_bytes, h2, sizeof(h2));
    human(rs.cache_limit, h3, sizeof(h3));
    putf(o, false,
         "remote connections  %" PRIu64 " open (%" PRIu64 " opened in all)\n"
         "remote requests     %" PRIu64 " (%" PRIu64 " retries, %" PRIu64 " failed)\n"
         "remote bytes        %" PRIu64 " (%s fetched)\n"
         "remote cache held   %" PRIu64 " (%s of %s)\n",
         hs.connections, hs.opened, hs.requests, hs.retries, hs.failures, hs.bytes, h1,
         rs.cache_bytes, h2, h3);
}

static void json_net(struct out *o, struct net *net)
{
    struct http_stats hs;
    struct remote_stats rs;

    if (!net) {
        putf(o, false, ",\"remote\":null");
        return;
    }
    net_stats(net, &hs, &rs);
    putf(o, false,
         ",\"remote\":{\"connections\":%" PRIu64 ",\"connections_opened\":%" PRIu64
         ",\"requests\":%" PRIu64 ",\"retries\":%" PRIu64 ",\"failures\":%" PRIu64
         ",\"bytes\":%" PRIu64 ",\"cache\":{\"bytes\":%" PRIu64 ",\"capacity\":%" PRIu64 "}}",
         hs.connections, hs.opened, hs.requests, hs.retries, hs.failures, hs.bytes,
         rs.cache_bytes, rs.cache_limit);
}

static void text_counters(struct out *o, const struct cache_stats *cs, uint64_t capacity)
{
    uint64_t served = atomic_load(&fs_counters.bytes_served);
    char h1[32], h2[32], h3[32], h4[32];

    human(served, h1, sizeof(h1));
    human(cs->inserted_bytes, h2, sizeof(h2));
    human(cs->bytes, h3, sizeof(h3));
    human(capacity, h4, sizeof(h4));
    putf(o, false,
         "reads               %" PRIu64 "\n"
         "read errors         %" PRIu64 "\n"
         "bytes served        %" PRIu64 " (%s)\n"
         "bytes decompressed  %" PRIu64 " (%s, into the chunk cache)\n"
         "cache hits          %" PRIu64 "\n"
         "cache misses        %" PRIu64 "\n"
         "cache evictions     %" PRIu64 "\n"
         "cache held          %" PRIu64 " (%s of %s, %" PRIu64 " chunks)\n"
         "archives opened     %" PRIu64 "\n"
         "readahead chunks    %" PRIu64 " (decoded ahead of readers)\n"
         "parked decoders     %u (at most %d)\n"
         "pages dropped       %" PRIu64 " (files whose kernel-cached pages were dropped: "
         "damage found, or the archive changed)\n"
         "files prefilled     %" PRIu64 " (small files put in the page cache at first open)\n"
         "index windows in memory: %" PRIu64 " bytes (limit %" PRIu64 ")\n"
         "unverified members  %" PRIu64 " (served before their full check)\n",
         (uint64_t)atomic_load(&fs_counters.reads), (uint64_t)atomic_load(&fs_counters.read_errors),
         served, h1, cs->inserted_bytes, h2, cs->hits, cs->misses, cs->evicted, cs->bytes, h3, h4,
         cs->chunks, (uint64_t)atomic_load(&fs_counters.archives_opened),
         (uint64_t)atomic_load(&fs_counters.readahead_chunks), parked_count(),
         PARKED_TOTAL, (uint64_t)atomic_load(&fs_counters.pages_dropped),
         (uint64_t)atomic_load(&fs_counters.prefilled),
         (uint64_t)atomic_load(&fs_window_budget.used), fs_window_budget.limit, o->unverified);
    text_net(o, o->opts->net);
}

static void json_counters(struct out *o, const struct cache_stats *cs, uint64_t capacity)
{
    putf(o, false,
         "{\"reads\":%" PRIu64 ",\"read_errors\":%" PRIu64 ",\"bytes_served\":%" PRIu64
         ",\"bytes_decompressed\":%" PRIu64 ",\"cache\":{\"hits\":%" PRIu64
         ",\"misses\":%" PRIu64 ",\"evictions\":%" PRIu64 ",\"bytes\":%" PRIu64
         ",\"chunks\":%" PRIu64 ",\"capacity\":%" PRIu64 "},\"archives_opened\":%" PRIu64
         ",\"readahead_chunks\":%" PRIu64 ",\"parked_decoders\":%u"
         ",\"parked_decoders_max\":%d,\"pages_dropped\":%" PRIu64 ",\"prefilled\":%" PRIu64
         ",\"index_windows\":{\"bytes\":%" PRIu64 ",\"limit\":%" PRIu64 "}"
         ",\"unverified_members\":%" PRIu64,
         (uint64_t)atomic_load(&fs_counters.reads), (uint64_t)atomic_load(&fs_counters.read_errors),
         (uint64_t)atomic_load(&fs_counters.bytes_served), cs->inserted_bytes, cs->hits,
         cs->misses, cs->evicted, cs->bytes, cs->chunks, capacity,
         (uint64_t)atomic_load(&fs_counters.archives_opened),
         (uint64_t)atomic_load(&fs_counters.readahead_chunks), parked_count(),
         PARKED_TOTAL, (uint64_t)atomic_load(&fs_counters.pages_dropped),
         (uint64_t)atomic_load(&fs_counters.prefilled),
         (uint64_t)atomic_load(&fs_window_budget.used), fs_window_budget.limit, o->unverified);
    json_net(o, o->opts->net);
}

/* The mount's indexing progress: members of the opened archives that get a
 * full pass, how many had it, are damaged, or have one running, and the
 * bytes still to check; and the archives by open state. */
struct progress {
    uint64_t members, indexed, damaged, passing, to_go;
    struct vfs_units units;
    bool lazy; /* no background pass (index=lazy, or remote sources only) */
};

static void tally_archive(struct archive *a, void *arg)
{
    struct progress *p = arg;
    uint64_t bad_from;

    for (size_t i = 0; i < a->count; i++) {
        struct archive_member *m = &a->members[i];
        int64_t start;

        if (!indexer_indexable(a, m))
            continue;
        p->members++;
        if (atomic_load(&m->crcs)) {
            p->indexed++;
        } else if (archive_damage(m, &bad_from) < 0 || atomic_load(&a->changed)) {
            p->damaged++;
        } else if ((start = atomic_load(&m->pass_start_ns)) != 0) {
            uint64_t done = atomic_load_explicit(&m->pass_done, memory_order_relaxed);
            p->passing++;
            p->to_go += done < m->size ? m->size - done : 0;
        } else {
            p->to_go += m->size;
        }
    }
}

static void text_progress(struct out *o, const struct progress *p)
{
    char h1[32], h2[32], running[48] = "";

    human(p->to_go, h1, sizeof(h1));
    if (p->passing)
        snprintf(running, sizeof(running), ", %" PRIu64 " pass%s running", p->passing,
                 p->passing == 1 ? "" : "es");
    putf(o, false, "indexing            %" PRIu64 " of %" PRIu64 " members indexed in %" PRIu64
         " opened archive%s, %s to go%s%s\n", p->indexed, p->members, p->units.opened,
         p->units.opened == 1 ? "" : "s", h1, running,
         p->lazy ? " (index=lazy: no background pass)" : "");
    if (p->damaged)
        putf(o, false, "  damaged           %" PRIu64 " member%s, never indexed (or the archive "
             "changed)\n", p->damaged, p->damaged == 1 ? "" : "s");
    if (p->units.unopened) {
        human(p->units.unopened_bytes, h2, sizeof(h2));
        putf(o, false, "  not opened yet    %" PRIu64 " archive%s (%s on disk; their members "
             "are not counted above)\n", p->units.unopened, p->units.unopened == 1 ? "" : "s",
             h2);
    }
    if (p->units.failed)
        putf(o, false, "  cannot be opened  %" PRIu64 " archive%s\n", p->units.failed,
             p->units.failed == 1 ? "" : "s");
}

static void json_progress(struct out *o, const struct progress *p)
{
    putf(o, false,
         ",\"indexing\":{\"background\":%s,\"members\":%" PRIu64 ",\"members_indexed\":%" PRIu64
         ",\"members_damaged\":%" PRIu64 ",\"passes_running\":%" PRIu64 ",\"bytes_to_go\":%" PRIu64
         ",\"archives_opened\":%" PRIu64 ",\"archives_not_opened\":%" PRIu64
         ",\"archives_not_opened_bytes\":%" PRIu64 ",\"archives_failed\":%" PRIu64 "}",
         p->lazy ? "false" : "true", p->members, p->indexed, p->damaged, p->passing, p->to_go,
         p->units.opened, p->units.unopened, p->units.unopened_bytes, p->units.failed);
}

/* Contract in stats.h. */
size_t stats_format(struct mount_ctx *ctx, bool json, char *buf, size_t size)
{
    struct out *o;
    struct cache_stats cs = {0};
    struct progress pg = {.lazy = !ctx->background};
    struct timespec now;

    if (size == 0)
        return 0;
    buf[0] = '\0';
    o = calloc(1, sizeof(*o));
    if (!o)
        return 0;
    o->opts = &ctx->opts;
    o->buf = buf;
    o->size = size;
    o->json = json;
    o->name_width = 6; /* "MEMBER" */
    clock_gettime(CLOCK_MONOTONIC, &now);
    o->now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    if (ctx->cache)
        cache_get_stats(ctx->cache, &cs);
    vfs_units(ctx->vfs, &pg.units);
    vfs_foreach(ctx->vfs, tally_archive, &pg);
    vfs_foreach(ctx->vfs, measure_archive, o);
    if (o->name_width > NAME_SHOWN_MAX + 3)
        o->name_width = NAME_SHOWN_MAX + 3;
    if (json) {
        json_counters(o, &cs, ctx->opts.cache_size);
        json_progress(o, &pg);
        putf(o, false, ",\"archives\":[");
    } else {
        text_counters(o, &cs, ctx->opts.cache_size);
        text_progress(o, &pg);
    }
    vfs_foreach(ctx->vfs, emit_archive, o);
    if (json)
        putf(o, true, "],\"members_omitted\":%" PRIu64 "}\n", o->omitted);
    else if (o->omitted)
        putf(o, true, "\n%" PRIu64 " more members not listed (the list is limited to 64 KiB)\n",
             o->omitted);
    size = o->len;
    free(o);
    return size;
}
