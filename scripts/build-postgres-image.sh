#!/bin/sh
# Build a PostgreSQL Docker image from this machine's own PostgreSQL installation,
# without any image registry (no `FROM <base>`): a root file system is assembled from
# the local server binaries, the shared libraries they need (per ldd), a shell and a
# few coreutils, and loaded with `docker import`.
#
# The image honours the contract of the official `postgres` image that the test
# fixtures in durable-testing rely on:
#   - env POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless
#     POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_DB (default = user),
#     POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (default scram-sha-256), PGDATA;
#   - listens on 5432 on all interfaces, password auth for TCP;
#   - a fresh cluster is initialised in PGDATA; a temporary socket-only server creates
#     POSTGRES_DB and runs /docker-entrypoint-initdb.d/*.sql|*.sh, so the line
#     "database system is ready to accept connections" is printed twice, as by the
#     official image;
#   - extra server args as the container command work: `postgres -c fsync=off` or
#     just `-c fsync=off`. Any other command is executed as is.
# The container runs as the unprivileged user `postgres` (uid 999); running it as
# root is not supported (there is no privilege-dropping tool in the image).
#
# Usage: scripts/build-postgres-image.sh [--force] [IMAGE]
#   IMAGE   image name:tag; default $DURABLE_TEST_POSTGRES_IMAGE, else
#           durable-postgres:<major>-local (durable-postgres:15-local for PostgreSQL 15)
#   --force rebuild even when the image already exists
# Env:
#   DURABLE_TEST_PG_BIN  directory of the server binaries (initdb, postgres, pg_ctl,
#                        psql); default /usr/lib/postgresql/15/bin, else the newest
#                        /usr/lib/postgresql/*/bin, else `pg_config --bindir`.
#
# Needs: docker (engine reachable), ldd, ldconfig, tar; PostgreSQL server binaries
# (Debian/Ubuntu: apt-get install postgresql). Run as root or as a docker-group user.
set -eu

force=0
image=""
for arg in "$@"; do
    case "$arg" in
        --force | -f) force=1 ;;
        -h | --help)
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
            exit 0
            ;;
        -*)
            echo "build-postgres-image: unknown option $arg (try --help)" >&2
            exit 2
            ;;
        *)
            if [ -n "$image" ]; then
                echo "build-postgres-image: more than one image name given" >&2
                exit 2
            fi
            image="$arg"
            ;;
    esac
done

die() {
    echo "build-postgres-image: $*" >&2
    exit 1
}

command -v docker >/dev/null 2>&1 || die "docker CLI not found: install Docker (e.g. apt-get install docker.io)"
docker version >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running? are you root or in the docker group?)"

# --- locate PostgreSQL -------------------------------------------------------
find_bindir() {
    if [ -n "${DURABLE_TEST_PG_BIN:-}" ]; then
        echo "$DURABLE_TEST_PG_BIN"
        return
    fi
    if [ -x /usr/lib/postgresql/15/bin/postgres ]; then
        echo /usr/lib/postgresql/15/bin
        return
    fi
    newest=""
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/postgres" ] || continue
        v=$(basename "$(dirname "$d")")
        if [ -z "$newest" ] || [ "$v" -gt "$(basename "$(dirname "$newest")")" ] 2>/dev/null; then
            newest="$d"
        fi
    done
    if [ -n "$newest" ]; then
        echo "$newest"
        return
    fi
    if command -v pg_config >/dev/null 2>&1; then
        pg_config --bindir
        return
    fi
    echo ""
}

bindir=$(find_bindir)
if [ -z "$bindir" ] || [ ! -x "$bindir/postgres" ] || [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/pg_ctl" ]; then
    die "PostgreSQL server binaries not found (looked at \$DURABLE_TEST_PG_BIN, /usr/lib/postgresql/*/bin, pg_config --bindir): install them (Debian/Ubuntu: apt-get install postgresql-15) or set DURABLE_TEST_PG_BIN"
fi
[ -x "$bindir/psql" ] || die "psql not found in $bindir (install the PostgreSQL client, e.g. postgresql-client-15)"
bindir=$(cd "$bindir" && pwd -P)

pgver=$("$bindir/postgres" --version | sed -n 's/.* \([0-9][0-9]*\)\(\.[0-9][0-9]*\)*.*/\1/p')
[ -n "$pgver" ] || die "cannot tell the PostgreSQL version of $bindir/postgres"

if [ -z "$image" ]; then
    image="${DURABLE_TEST_POSTGRES_IMAGE:-durable-postgres:${pgver}-local}"
fi

if [ "$force" -eq 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "build-postgres-image: $image already exists (use --force to rebuild)"
    exit 0
fi

pg_config_bin="$bindir/pg_config"
[ -x "$pg_config_bin" ] || pg_config_bin=$(command -v pg_config || true)
pkglibdir=""
sharedir=""
if [ -n "$pg_config_bin" ] && [ "$("$pg_config_bin" --bindir 2>/dev/null)" = "$bindir" ]; then
    pkglibdir=$("$pg_config_bin" --pkglibdir)
    sharedir=$("$pg_config_bin" --sharedir)
fi
# Debian layout fallbacks.
[ -n "$pkglibdir" ] || pkglibdir="$(dirname "$bindir")/lib"
[ -n "$sharedir" ] || sharedir="/usr/share/postgresql/$pgver"
[ -f "$sharedir/postgres.bki" ] || die "PostgreSQL share directory not found ($sharedir/postgres.bki missing)"
[ -d "$pkglibdir" ] || die "PostgreSQL library directory $pkglibdir not found"

for tool in ldd ldconfig tar; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (install libc-bin / tar)"
done

old_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
echo "build-postgres-image: building $image from PostgreSQL $pgver in $bindir"

# --- assemble the root file system ------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/durable-pg-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
root="$work/rootfs"
mkdir -p "$root"

# Mirror the host's merged-/usr symlinks (bin -> usr/bin, ...) so that paths printed
# by ldd resolve the same way inside the image.
for d in bin sbin lib lib32 lib64 libx32; do
    if [ -L "/$d" ]; then
        ln -s "$(readlink "/$d")" "$root/$d"
    fi
done

# copy_path SRC: copy file SRC (following symlinks) to the same path in the rootfs,
# placing it under the real directory of SRC's parent (so /lib/x.so lands in usr/lib).
copy_path() {
    src="$1"
    dir=$(cd "$(dirname "$src")" && pwd -P)
    mkdir -p "$root$dir"
    cp -L "$src" "$root$dir/$(basename "$src")"
}

# copy_tree SRC: copy a directory tree to the same (real) path in the rootfs.
copy_tree() {
    src=$(cd "$1" && pwd -P)
    mkdir -p "$root$(dirname "$src")"
    cp -a "$src" "$root$(dirname "$src")/"
}

copy_tree "$(dirname "$bindir")"
copy_tree "$sharedir"
# JIT (LLVM) is optional for PostgreSQL and costs >100 MB: leave it out.
realpkglib=$(cd "$pkglibdir" && pwd -P)
rm -rf "$root$realpkglib/bitcode" "$root$realpkglib"/llvmjit*
if [ ! -d "$root$realpkglib" ]; then
    copy_tree "$pkglibdir"
    rm -rf "$root$realpkglib/bitcode" "$root$realpkglib"/llvmjit*
fi
[ -d /usr/share/zoneinfo ] && copy_tree /usr/share/zoneinfo
locale=C
if [ -d /usr/lib/locale/C.utf8 ]; then
    copy_tree /usr/lib/locale/C.utf8
    locale=C.UTF-8
fi

# Shell and the few utilities the entrypoint uses.
for t in dash id mkdir chmod rm cat ls env; do
    p=$(command -v "$t" 2>/dev/null || true)
    [ -n "$p" ] || die "$t not found on this machine (install dash / coreutils)"
    copy_path "$p"
done
# `locale -a` lets initdb import the C.UTF-8 collation; optional.
p=$(command -v locale 2>/dev/null || true)
[ -z "$p" ] || copy_path "$p"
shell=$(command -v dash)
mkdir -p "$root/bin" "$root/usr/bin" "$root/usr/local/bin"
[ -e "$root/bin/sh" ] || ln -s "$(cd "$(dirname "$shell")" && pwd -P)/dash" "$root/bin/sh"

# Shared libraries of every ELF file copied so far, and the dynamic loader.
libs="$work/libs"
: >"$libs"
find "$root" -type f \( -perm -u+x -o -name '*.so' -o -name '*.so.*' \) >"$work/elfs"
while read -r f; do
    # Only ELF files: ldd prints "not a dynamic executable" (and fails) otherwise.
    ldd "$f" 2>/dev/null | awk '
        /=> not found/ { print "MISSING " $1; next }
        /=>/ { if ($3 ~ /^\//) print $3; next }
        /^[ \t]*\// { print $1 }' >>"$libs" || true
done <"$work/elfs"
if grep -q '^MISSING' "$libs"; then
    die "some libraries needed by PostgreSQL are missing on this machine: $(grep '^MISSING' "$libs" | sort -u | cut -d' ' -f2 | tr '\n' ' ')"
fi
sort -u "$libs" >"$libs.sorted"
while read -r lib; do
    copy_path "$lib"
done <"$libs.sorted"
# A loader cache for the libraries' directories, so the image does not rely on the
# loader's built-in search path.
mkdir -p "$root/etc"
while read -r lib; do
    cd "$(dirname "$lib")" && pwd -P
done <"$libs.sorted" | sort -u >"$root/etc/ld.so.conf"
cd /
ldconfig -r "$root" 2>/dev/null || ldconfig -r "$root" -f /etc/ld.so.conf

# Users, name service, writable directories.
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/sh
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
postgres:x:999:
EOF
cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files
EOF
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
mkdir -p "$root/tmp" "$root/var/lib/postgresql" "$root/var/run/postgresql" \
    "$root/docker-entrypoint-initdb.d" "$root/root" "$root/dev" "$root/proc" "$root/sys"
# World-writable with the sticky bit: the files can stay owned by root in the tarball
# (no chown needed, works without root) while the postgres user creates PGDATA itself.
chmod 1777 "$root/tmp" "$root/var/lib/postgresql" "$root/var/run/postgresql"

# --- entrypoint ---------------------------------------------------------------
cat >"$root/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
# Entrypoint compatible with the official postgres image (see build-postgres-image.sh).
set -eu

if [ "$#" -eq 0 ]; then
    set -- postgres
fi
case "$1" in
    -*) set -- postgres "$@" ;;
esac
if [ "$1" != postgres ]; then
    exec "$@"
fi
shift
# Like the official image: no initialisation for a help/version request.
for arg in "$@"; do
    case "$arg" in
        -'?' | --help | --describe-config | -V | --version) exec postgres "$@" ;;
    esac
done

if [ "$(id -u)" = 0 ]; then
    echo "error: this image runs PostgreSQL as user postgres (uid 999); do not override the user with root" >&2
    exit 1
fi

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_PASSWORD:=}"
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
: "${POSTGRES_INITDB_ARGS:=}"
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        cat >&2 <<'MSG'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
       (or set POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password)
MSG
        exit 1
    fi
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    pwfile=""
    if [ -n "$POSTGRES_PASSWORD" ]; then
        pwfile="/tmp/pgpass.$$"
        (umask 077 && printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile")
    fi
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is split on purpose
    initdb --username="$POSTGRES_USER" ${pwfile:+--pwfile="$pwfile"} \
        --encoding=UTF8 --locale=@LOCALE@ --auth-local=trust \
        --auth-host="$POSTGRES_HOST_AUTH_METHOD" $POSTGRES_INITDB_ARGS
    [ -z "$pwfile" ] || rm -f "$pwfile"
    printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

    # Temporary server on the unix socket only, as the official image does.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
    psql_run() {
        psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER" "$@"
    }
    if [ "$POSTGRES_DB" != postgres ]; then
        echo 'CREATE DATABASE :"db" ;' | psql_run --dbname postgres --set db="$POSTGRES_DB"
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            # shellcheck disable=SC1090 # sourced like the official image does
            *.sh) echo "$0: running $f"; . "$f" ;;
            *.sql) echo "$0: running $f"; psql_run --dbname "$POSTGRES_DB" -f "$f" ;;
            */\*) ;;
            *) echo "$0: ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo
    echo 'PostgreSQL init process complete; ready for start up.'
    echo
else
    echo
    echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
    echo
fi

exec postgres "$@"
EOF
sed -i "s/@LOCALE@/$locale/" "$root/usr/local/bin/docker-entrypoint.sh"
chmod 755 "$root/usr/local/bin/docker-entrypoint.sh"

# --- import ---------------------------------------------------------------------
realbin=$(cd "$bindir" && pwd -P)
echo "build-postgres-image: importing rootfs ($(du -sh "$root" | cut -f1)) as $image"
tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - . | docker import \
    --change "ENV PATH=$realbin:/usr/local/bin:/usr/bin:/bin" \
    --change "ENV PGDATA=/var/lib/postgresql/data" \
    --change "ENV LANG=$locale" \
    --change "ENV TZ=Etc/UTC" \
    --change "ENV PG_MAJOR=$pgver" \
    --change 'USER 999:999' \
    --change 'WORKDIR /' \
    --change 'EXPOSE 5432' \
    --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    --change 'CMD ["postgres"]' \
    --change "LABEL org.opencontainers.image.description=\"PostgreSQL $pgver built locally by durable's scripts/build-postgres-image.sh\"" \
    - "$image" >/dev/null
new_id=$(docker image inspect --format '{{.Id}}' "$image")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    # The previous build is now untagged; remove it unless a container still uses it.
    docker rmi "$old_id" >/dev/null 2>&1 || true
fi
echo "build-postgres-image: built $image"
