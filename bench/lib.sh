# Shared by the bench scripts (sourced): `measure LABEL COMMAND...` prints wall time and peak RSS
# from /usr/bin/time into a line; needs $work (a scratch folder).
measure() {
    local label=$1; shift
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null
    read -r secs kb <"$work/time"
    printf '%-34s %8.2f s %8.1f MiB peak RSS\n' "$label" "$secs" "$(echo "$kb/1024" | bc -l)"
}
machine() { echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"; }
