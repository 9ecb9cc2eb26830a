#!/usr/bin/env python3
"""Writes a container image as an OCI image layout archive, without a
container engine: what `ctr images import` (containerd) loads.

One layer holds the files given with --file and the folders given with
--tree (less the names --exclude gives), and with --distroless what the
Dockerfiles' base image (distroless cc-debian12:nonroot) provides for a
dynamically linked binary: the glibc libraries the binaries need (from
`ldd`), CA certificates, /etc/passwd and /etc/group with `nonroot` (65532),
/home/nonroot and /tmp. The archive is reproducible: sorted entries, fixed
owners and times, gzip without a timestamp.

Example:
  scripts/oci-image.py --name shoal-operator:0.1.0 --out op.tar --distroless \
    --file target/release/shoal-operator:/usr/local/bin/shoal-operator \
    --entrypoint /usr/local/bin/shoal-operator --cmd run \
    --user 65532:65532 --expose 8080/tcp
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

# The environment distroless cc-debian12 sets; the Dockerfiles' ENV lines
# come on top.
DISTROLESS_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
]
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"


def fail(message):
    print(f"oci-image: {message}", file=sys.stderr)
    sys.exit(1)


def full_name(name):
    """The reference as containerd stores it (docker.io/library/...)."""
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def shared_libraries(binary, strict=True):
    """Absolute paths of the libraries `ldd` says `binary` loads. A library
    the machine lacks fails, unless not `strict` (a native module of a
    --tree that nothing may import here): then it is left out."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0:
        if "not a dynamic executable" in out.stdout + out.stderr:
            return []
        fail(f"ldd {binary}: {out.stderr.strip()}")
    libraries = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=> not found" in line:
            if strict:
                fail(f"{binary}: a library is missing: {line}")
            print(f"oci-image: {binary}: left without {line.split()[0]}", file=sys.stderr)
            continue
        if "=>" in line:
            path = line.split("=>", 1)[1].split("(")[0].strip()
        else:
            path = line.split("(")[0].strip()
        if path.startswith("/"):
            libraries.append(path)
    return libraries


class Layer:
    """A tar layer built in memory."""

    def __init__(self):
        self.entries = {}

    def directory(self, path, mode=0o755, uid=0):
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts)):
            self.entries.setdefault("/".join(parts[:i]), ("dir", 0o755, 0, None))
        self.entries[path] = ("dir", mode, uid, None)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent and parent not in self.entries:
            self.directory(parent)
        self.entries[path] = ("file", mode, 0, data)

    def copy(self, source, dest, mode=None):
        with open(source, "rb") as handle:
            data = handle.read()
        if mode is None:
            mode = 0o755 if os.access(source, os.X_OK) else 0o644
        self.file(dest, data, mode)

    def tar(self):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                kind, mode, uid, data = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mode = mode
                info.uid = info.gid = uid
                info.uname = info.gname = ""
                info.mtime = 0
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="image reference, e.g. shoal-operator:0.1.0")
    parser.add_argument("--out", required=True, help="archive to write")
    parser.add_argument("--file", action="append", default=[], help="SOURCE:DEST, repeatable")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        help="SOURCE_DIR:DEST, repeatable: every file below, symlinks followed",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        help="a file or folder name --tree leaves out wherever it is (NAME/: a folder"
        " at a tree's top only), repeatable",
    )
    parser.add_argument("--distroless", action="store_true", help="add what distroless cc provides")
    parser.add_argument("--entrypoint", action="append", default=[])
    parser.add_argument("--cmd", action="append", default=[])
    parser.add_argument("--user", default="")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE, repeatable")
    parser.add_argument("--expose", action="append", default=[], help="PORT/PROTO")
    parser.add_argument("--workdir", default="/")
    args = parser.parse_args()

    layer = Layer()
    binaries = []
    for spec in args.file:
        source, sep, dest = spec.partition(":")
        if not sep or not dest.startswith("/"):
            fail(f"--file {spec!r}: want SOURCE:/absolute/destination")
        if not os.path.isfile(source):
            fail(f"--file {spec!r}: {source} is not a file")
        layer.copy(source, dest)
        if os.access(source, os.X_OK):
            binaries.append(source)
    excluded = set(args.exclude)
    tree_binaries = []
    for spec in args.tree:
        source, sep, dest = spec.partition(":")
        if not sep or not dest.startswith("/"):
            fail(f"--tree {spec!r}: want SOURCE_DIR:/absolute/destination")
        if not os.path.isdir(source):
            fail(f"--tree {spec!r}: {source} is not a folder")
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(
                d
                for d in dirs
                if d not in excluded
                and os.path.relpath(os.path.join(root, d), source) + "/" not in excluded
            )
            for name in sorted(files):
                if name in excluded:
                    continue
                path = os.path.join(root, name)
                if not os.path.isfile(path):
                    continue
                target = os.path.join(dest, os.path.relpath(path, source))
                layer.copy(path, target)
                # Native modules and their libraries load like binaries.
                if ".so" in name or os.access(path, os.X_OK):
                    tree_binaries.append(path)
    env = []
    if args.distroless:
        env.extend(DISTROLESS_ENV)
        for binary in binaries:
            for library in shared_libraries(binary):
                layer.copy(os.path.realpath(library), library, 0o755)
        for binary in tree_binaries:
            for library in shared_libraries(binary, strict=False):
                # `$ORIGIN/../x` run paths give names with `..` in them.
                layer.copy(os.path.realpath(library), os.path.normpath(library), 0o755)
        if not os.path.isfile(CA_BUNDLE):
            fail(f"{CA_BUNDLE} not found: install the ca-certificates package")
        layer.copy(CA_BUNDLE, CA_BUNDLE, 0o644)
        layer.file("/etc/passwd", PASSWD.encode())
        layer.file("/etc/group", GROUP.encode())
        layer.directory("/home/nonroot", 0o700, 65532)
        layer.directory("/tmp", 0o1777)
    env.extend(args.env)

    tar = layer.tar()
    compressed = gzip.compress(tar, compresslevel=6, mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": env,
            "Entrypoint": args.entrypoint or None,
            "Cmd": args.cmd or None,
            "User": args.user,
            "WorkingDir": args.workdir,
            "ExposedPorts": {port: {} for port in args.expose} or None,
        },
        "rootfs": {"type": "layers", "diff_ids": [blob(tar)]},
        "history": [{"created_by": "scripts/oci-image.py"}],
    }
    config["config"] = {k: v for k, v in config["config"].items() if v is not None}
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": blob(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": blob(compressed),
                "size": len(compressed),
            }
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    name = full_name(args.name)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": blob(manifest_bytes),
                "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
    }
    for data in (config_bytes, manifest_bytes, compressed):
        files["blobs/sha256/" + blob(data)[len("sha256:"):]] = data
    archive = Layer()
    for path, data in files.items():
        archive.file(path, data)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(archive.tar())
    os.replace(tmp, args.out)
    print(f"{name} {blob(manifest_bytes)} {len(compressed)} bytes -> {args.out}")


if __name__ == "__main__":
    main()
