'use strict';
/*
 * Preloaded into s3rver by the remote tests and benchmark
 * (node -r tests/servers/reqlog.js .../s3rver.js ...), so they can count its
 * requests and bytes: s3rver has no access log of its own (its console log
 * rounds sizes). Appends one JSON line per request to $NPYFS_REQLOG when the
 * reply is done or the connection closes first:
 *
 *   {"msec": start time (s), "method", "uri" (as sent), "range", "if_match",
 *    "status", "content_length" (-1: none), "bytes_sent" (headers and body),
 *    "body_bytes" (body only), "finished" (false: the client went away first)}
 *
 * For a reply cut short, bytes_sent counts what node accepted for the socket,
 * which may be more than what reached the client.
 */
const fs = require('fs');
const http = require('http');

const file = process.env.NPYFS_REQLOG;
if (file) {
  const fd = fs.openSync(file, 'a');
  const emit = http.Server.prototype.emit;
  http.Server.prototype.emit = function (event, req, res) {
    if (event === 'request') {
      const sock = req.socket;
      const before = sock.bytesWritten;
      const t0 = Date.now() / 1000;
      let logged = false;
      const log = (finished) => {
        if (logged) return;
        logged = true;
        const sent = sock.bytesWritten - before;
        const head = typeof res._header === 'string' ? Buffer.byteLength(res._header) : 0;
        const cl = res.getHeader('content-length');
        const rec = {
          msec: t0,
          method: req.method,
          uri: req.url,
          range: req.headers.range || '',
          if_match: req.headers['if-match'] || '',
          status: res.statusCode,
          content_length: cl === undefined ? -1 : Number(cl),
          bytes_sent: sent,
          body_bytes: Math.max(0, sent - head),
          finished,
        };
        fs.writeSync(fd, JSON.stringify(rec) + '\n');
      };
      res.on('finish', () => log(true));
      res.on('close', () => log(false));
    }
    return emit.apply(this, arguments);
  };
}
