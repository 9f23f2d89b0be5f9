"""A server that answers like the Hugging Face Hub, for the hf:// tests
(helper-hub.R starts it).

    python3 hub-server.py ROOT LOG

Two HTTP servers on 127.0.0.1 in one process: the Hub (the `resolve` URLs
and the one API route the package uses) and a "CDN" that large files are
redirected to, as the Hub redirects LFS files to its CDN. The first line
of standard output is "HUB_PORT CDN_PORT". Every response is logged to
LOG as one JSON line, before its body: the server, method, path, Host,
Range, Authorization, status and body bytes. It stops when standard input
closes. Only the standard library is used.

ROOT holds the repositories, as helper-hub.R writes them:

  ROOT/<models|datasets|spaces>/<owner>/<name>/
    refs.json            {"main": "<commit>", "v1.0": "<commit>", ...}
    access.json          optional: {"gated": true} or {"private": true},
                         and "tokens": the tokens that have access
    commits/<commit>/... the files of each commit, as in the repository

Routes of the Hub (paths after an optional "datasets/" or "spaces/"):

  HEAD, GET /<owner>/<name>/resolve/<revision>/<path>
      A file at a revision (a branch, a tag or a 40-hex commit; "%2F" in it
      stands for "/"). Large files (*.safetensors, *.bin, or over 1 MiB)
      are "LFS" files: 302 to the CDN with X-Repo-Commit, X-Linked-Etag
      (the quoted SHA-256 of the content), X-Linked-Size and Location.
      Others are served here with ETag (the quoted git blob SHA-1),
      X-Repo-Commit and Content-Length, with ranges.
  GET /api/<models|datasets|spaces>/<owner>/<name>/revision/<revision>
      {"id", "sha", "siblings": [{"rfilename"}]}, as the Hub's API.

Errors as the Hub sends them, with X-Error-Code and X-Error-Message: a
missing repository is 401 RepoNotFound without a token (as the Hub, which
does not tell a missing repository from a private one) and 404 with one; a
private repository without a token with access is the same; a gated one is
401 GatedRepo without a token and 403 GatedRepo with a token that has no
access; a missing revision is 404 RevisionNotFound, a missing file 404
EntryNotFound (with X-Repo-Commit).

The CDN serves GET and HEAD /<sha256>?X-Amz-Signature=<sig> with single
ranges (by sendfile, so as fast as the disk and the socket). A signature
other than the one the Hub gave is 403.

ROOT/_modes.json, read on every request when present, makes the servers
misbehave on purpose:

  {"cdn_norange": true}       the CDN ignores Range (200, whole file)
  {"cdn_drop": N}             the first N CDN responses send half their body
                              and drop the connection
  {"cdn_cut": B}              every CDN response sends at most B bytes of
                              its body and drops the connection
  {"cdn_expire": N}           the first N CDN requests get 403, as an
                              expired signed URL does
  {"cdn_slow": S}             the CDN sends bodies in pieces of 64 KiB, S
                              seconds apart
  {"hub_status": C}           the Hub answers every request with status C
  {"hub_no_commit": true}     no X-Repo-Commit (not a Hub)
  {"hub_no_etag": true}       no ETag nor X-Linked-Etag
  {"api_garbage": true}       the API answers with a web page
"""

import hashlib
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.realpath(sys.argv[1])
LOG = sys.argv[2]
lock = threading.Lock()
counters = {}
digests = {}
blobs = {}  # sha256 -> file path, for the CDN
ports = {}


def log(entry):
    with lock:
        with open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")


def count(key):
    with lock:
        counters[key] = counters.get(key, 0) + 1
        return counters[key]


def modes():
    try:
        with open(os.path.join(ROOT, "_modes.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def file_digests(path):
    """(git blob SHA-1, SHA-256) of a file, remembered by path, size and mtime."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    with lock:
        if key in digests:
            return digests[key]
    sha1 = hashlib.sha1(b"blob %d\0" % st.st_size)
    sha256 = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            sha1.update(chunk)
            sha256.update(chunk)
    out = (sha1.hexdigest(), sha256.hexdigest())
    with lock:
        digests[key] = out
    return out


def is_lfs(path):
    return path.endswith((".safetensors", ".bin")) or os.path.getsize(path) > (1 << 20)


def signature(sha256):
    return hashlib.sha1(("signed:" + sha256).encode()).hexdigest()[:16]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_name = "hub"

    def log_message(self, *args):
        pass

    def entry(self, status, sent):
        log({
            "server": self.server_name,
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host"),
            "range": self.headers.get("Range"),
            "auth": self.headers.get("Authorization"),
            "status": status,
            "sent": sent,
        })

    def simple(self, status, body=b"", headers=()):
        if self.command == "HEAD":
            body_out = b""
        else:
            body_out = body
        self.entry(status, len(body_out))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body_out:
            self.wfile.write(body_out)

    def error(self, status, code, message, headers=()):
        hs = [("X-Error-Code", code), ("X-Error-Message", message), ("Content-Type", "text/plain")]
        self.simple(status, message.encode(), list(headers) + hs)

    def send_file(self, path, headers=(), norange=False, drop=False, cut=None, slow=None):
        """The file at `path`, or the range asked for, by sendfile."""
        total = os.path.getsize(path)
        rng = self.headers.get("Range")
        status, start, end = 200, 0, total - 1
        if rng and not norange:
            m = re.match(r"^bytes=(\d*)-(\d*)$", rng.strip())
            if not m or (m.group(1) == "" and m.group(2) == ""):
                return self.simple(400, b"bad range")
            if m.group(1) == "":
                start, end = max(0, total - int(m.group(2))), total - 1
            else:
                start = int(m.group(1))
                end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
            if start >= total or start > end:
                return self.simple(416, headers=[("Content-Range", "bytes */%d" % total)])
            status = 206
        length = end - start + 1
        send = length
        if drop:
            send = length // 2
        if cut is not None:
            send = min(send, cut)
        head = self.command == "HEAD"
        self.entry(status, 0 if head else send)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, total))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if send < length:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if head:
            return
        try:
            with open(path, "rb") as f:
                offset, left = start, send
                out = self.connection.fileno()
                while left > 0:
                    n = os.sendfile(out, f.fileno(), offset, min(left, 65536 if slow else 1 << 24))
                    if n == 0:
                        break
                    offset += n
                    left -= n
                    if slow:
                        time.sleep(slow)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_HEAD(self):
        self.do_GET()


class HubHandler(Handler):
    server_name = "hub"

    def check_access(self, kind, repo, rdir):
        """None when the request may read the repository, else the error sent."""
        singular = {"models": "model", "datasets": "dataset", "spaces": "space"}[kind]
        auth = self.headers.get("Authorization")
        token = auth[7:] if auth and auth.startswith("Bearer ") else None
        if not os.path.isdir(rdir):
            if token is None:
                return self.error(401, "RepoNotFound", "Invalid username or password.")
            return self.error(404, "RepoNotFound", "Repository not found")
        access = read_json(os.path.join(rdir, "access.json"), {})
        allowed = token is not None and token in access.get("tokens", [])
        if access.get("private") and not allowed:
            if token is None:
                return self.error(401, "RepoNotFound", "Invalid username or password.")
            return self.error(404, "RepoNotFound", "Repository not found")
        if access.get("gated") and not allowed:
            endpoint = "http://127.0.0.1:%d" % ports["hub"]
            if token is None:
                return self.error(
                    401, "GatedRepo",
                    "Access to %s %s is restricted. You must have access to it and be authenticated to access it. Please log in." % (singular, repo),
                )
            return self.error(
                403, "GatedRepo",
                "Access to %s %s is restricted and you are not in the authorized list. Visit %s/%s to ask for access." % (singular, repo, endpoint, repo),
            )
        return True

    def commit_of(self, kind, repo, revision):
        """The folder and the commit of `revision` of a repository, or None
        once the error (no access, no such revision) is sent."""
        rdir = os.path.join(ROOT, kind, *repo.split("/"))
        if self.check_access(kind, repo, rdir) is not True:
            return None
        refs = read_json(os.path.join(rdir, "refs.json"), {})
        commit = refs.get(revision)
        if commit is None and re.match(r"^[0-9a-f]{40}$", revision) and os.path.isdir(os.path.join(rdir, "commits", revision)):
            commit = revision
        if commit is None:
            self.error(404, "RevisionNotFound", "Invalid rev id: %s" % revision)
            return None
        return rdir, commit

    def do_GET(self):
        m = modes()
        if "hub_status" in m:
            return self.simple(int(m["hub_status"]), b"unavailable")
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        api = re.match(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/revision/(.+)$", path)
        if api:
            return self.api_revision(api.group(1), api.group(2), urllib.parse.unquote(api.group(3)))
        kind = "models"
        rest = path
        for k in ("datasets", "spaces"):
            if path.startswith("/" + k + "/"):
                kind, rest = k, path[len(k) + 1:]
        r = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", rest)
        if not r:
            return self.simple(404, b"not found")
        repo = r.group(1)
        revision = urllib.parse.unquote(r.group(2))
        file = urllib.parse.unquote(r.group(3))
        # Special refs keep their slashes unencoded in URLs (refs/pr/1).
        if revision == "refs":
            parts = file.split("/", 2)
            if len(parts) == 3:
                revision, file = "refs/%s/%s" % (parts[0], parts[1]), parts[2]
        found = self.commit_of(kind, repo, revision)
        if found is None:
            return
        rdir, commit = found
        commit_header = [] if m.get("hub_no_commit") else [("X-Repo-Commit", commit)]
        base = os.path.realpath(os.path.join(rdir, "commits", commit))
        target = os.path.realpath(os.path.join(base, file))
        if not target.startswith(base + os.sep) or not os.path.isfile(target):
            return self.error(404, "EntryNotFound", "Entry not found", commit_header)
        sha1, sha256 = file_digests(target)
        if m.get("hub_no_etag"):
            return self.simple(200, b"", commit_header + [("Content-Type", "text/plain")])
        if is_lfs(target):
            with lock:
                blobs[sha256] = target
            location = "http://127.0.0.1:%d/%s?X-Amz-Expires=3600&X-Amz-Signature=%s" % (
                ports["cdn"], sha256, signature(sha256))
            headers = commit_header + [
                ("X-Linked-Etag", '"%s"' % sha256),
                ("X-Linked-Size", str(os.path.getsize(target))),
                ("ETag", '"%s"' % sha1),
                ("Location", location),
            ]
            return self.simple(302, b"Found. Redirecting", headers)
        return self.send_file(target, commit_header + [("ETag", '"%s"' % sha1)])

    def api_revision(self, kind, repo, revision):
        if modes().get("api_garbage"):
            return self.simple(200, b"<html>hello</html>", [("Content-Type", "text/html")])
        found = self.commit_of(kind, repo, revision)
        if found is None:
            return
        rdir, commit = found
        base = os.path.join(rdir, "commits", commit)
        files = []
        for dirpath, _, names in os.walk(base):
            for n in names:
                files.append(os.path.relpath(os.path.join(dirpath, n), base).replace(os.sep, "/"))
        files.sort()
        body = json.dumps({
            "_id": "0" * 24,
            "id": repo,
            "sha": commit,
            "private": bool(read_json(os.path.join(rdir, "access.json"), {}).get("private")),
            "siblings": [{"rfilename": f} for f in files],
        }).encode()
        self.simple(200, body, [("Content-Type", "application/json")])


class CdnHandler(Handler):
    server_name = "cdn"

    def do_GET(self):
        m = modes()
        url = urllib.parse.urlsplit(self.path)
        sha256 = url.path.lstrip("/")
        query = urllib.parse.parse_qs(url.query)
        with lock:
            path = blobs.get(sha256)
        if path is None:
            return self.simple(404, b"no such blob")
        if query.get("X-Amz-Signature", [""])[0] != signature(sha256):
            return self.simple(403, b"signature does not match")
        if m.get("cdn_expire") and count("expire") <= int(m["cdn_expire"]):
            return self.simple(403, b"Request has expired")
        drop = bool(m.get("cdn_drop")) and count("drop") <= int(m["cdn_drop"])
        self.send_file(path, norange=bool(m.get("cdn_norange")), drop=drop, cut=m.get("cdn_cut"), slow=m.get("cdn_slow"))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    hub = Server(("127.0.0.1", 0), HubHandler)
    cdn = Server(("127.0.0.1", 0), CdnHandler)
    ports["hub"] = hub.server_address[1]
    ports["cdn"] = cdn.server_address[1]
    print(ports["hub"], ports["cdn"], flush=True)
    for s in (hub, cdn):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    hub.shutdown()
    cdn.shutdown()
