# bash completion for npyfs(1). Installed by `cmake --install` as
# share/bash-completion/completions/npyfs (bash-completion loads it on the
# first `npyfs <TAB>`); or source it from ~/.bashrc. Plain bash: it needs
# nothing from the bash-completion package.

# The -o options: npyfs's own (in step with `npyfs --help`, which
# tests/integration/test_usability.py checks) and those passed to libfuse.
# Remote sources' options (mount, and also ls and index).
_npyfs_net_opts="endpoint= region= s3_path_style s3_anonymous cacert= http_header=
connections= timeout= retries= block= remote_cache="
_npyfs_mount_opts="cache_size= spacing= threads= readahead= spin= index_dir= index= index_mem= index_max=
verify= verify_max= max_ratio= $_npyfs_net_opts index_url=
allow_other allow_root auto_unmount default_permissions debug ro nodev dev nosuid suid
noexec exec noatime atime sync async dirsync max_read= fsname= user=
context= fscontext= defcontext= rootcontext="
_npyfs_index_opts="index_dir= index_max= spacing= max_ratio= index_out= $_npyfs_net_opts"

# The directories an npyfs mount is on (/proc/mounts escapes a space as \040).
_npyfs_mounts()
{
    local src dir type rest
    while read -r src dir type rest; do
        [[ $type == fuse.npyfs ]] && printf '%b\n' "$dir"
    done < /proc/mounts 2>/dev/null
}

# File names for $1, one word each (a name with spaces stays one word);
# readline quotes them (-o filenames).
_npyfs_files()
{
    local f
    COMPREPLY=()
    while IFS= read -r f; do COMPREPLY+=("$f"); done < <(compgen -f -- "$1")
    compopt -o filenames 2>/dev/null
}

# Complete the comma-separated list after -o from the words in $1.
_npyfs_complete_opts()
{
    local cur=$2 head="" last=$2 w
    if [[ $cur == *,* ]]; then
        head=${cur%,*},
        last=${cur##*,}
    fi
    case $last in
        index=*) COMPREPLY=($(compgen -P "$head" -W "index=background index=lazy" -- "$last")) ;;
        verify=*) COMPREPLY=($(compgen -P "$head" -W "verify=auto verify=lazy verify=strict" -- "$last")) ;;
        index_dir=*)
            local d
            COMPREPLY=()
            while IFS= read -r d; do COMPREPLY+=("${head}index_dir=$d"); done \
                < <(compgen -d -- "${last#index_dir=}")
            ;;
        cacert=*|http_header=*|index_out=*)
            local f k=${last%%=*}
            COMPREPLY=()
            while IFS= read -r f; do COMPREPLY+=("${head}$k=$f"); done \
                < <(compgen -f -- "${last#*=}")
            ;;
        *) COMPREPLY=($(compgen -P "$head" -W "$1" -- "$last")) ;;
    esac
    # an option that takes a value: no space after it
    for w in "${COMPREPLY[@]}"; do
        [[ $w == *= ]] && { compopt -o nospace 2>/dev/null; break; }
    done
}

_npyfs()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local cmd=${COMP_WORDS[1]}
    COMPREPLY=()
    if ((COMP_CWORD == 1)); then
        COMPREPLY=($(compgen -W "mount unmount ls index stats --help --version" -- "$cur"))
        return
    fi
    case $cmd in
        mount|index)
            local opts=$_npyfs_mount_opts
            [[ $cmd == index ]] && opts=$_npyfs_index_opts
            if [[ $prev == -o ]]; then
                _npyfs_complete_opts "$opts" "$cur"
            elif [[ $cur == -o?* ]]; then
                _npyfs_complete_opts "$opts" "${cur#-o}"
                COMPREPLY=("${COMPREPLY[@]/#/-o}")
            elif [[ $cur == -* ]]; then
                if [[ $cmd == mount ]]; then
                    COMPREPLY=($(compgen -W "-f -d -o --help" -- "$cur"))
                else
                    COMPREPLY=($(compgen -W "-o --prune --help" -- "$cur"))
                fi
            else
                _npyfs_files "$cur"
            fi
            ;;
        unmount|umount|stats)
            if [[ $cur == -* ]]; then
                if [[ $cmd == stats ]]; then
                    COMPREPLY=($(compgen -W "--json --help" -- "$cur"))
                else
                    COMPREPLY=($(compgen -W "-z --lazy --help" -- "$cur"))
                fi
            else
                # npyfs mount points, quoted here (a mount point may hold a
                # space): -o filenames would have readline stat each one,
                # which hangs on a mount whose daemon hangs
                local m
                while IFS= read -r m; do
                    [[ $m == "$cur"* ]] && COMPREPLY+=("$(printf '%q' "$m")")
                done < <(_npyfs_mounts)
                # a relative path to a mount: directories
                if ((${#COMPREPLY[@]} == 0)); then
                    while IFS= read -r m; do COMPREPLY+=("$m"); done < <(compgen -d -- "$cur")
                    compopt -o filenames 2>/dev/null
                fi
            fi
            ;;
        ls)
            if [[ $prev == -o ]]; then
                _npyfs_complete_opts "max_ratio= $_npyfs_net_opts" "$cur"
            elif [[ $cur == -o?* ]]; then
                _npyfs_complete_opts "max_ratio= $_npyfs_net_opts" "${cur#-o}"
                COMPREPLY=("${COMPREPLY[@]/#/-o}")
            elif [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "--json -o --help" -- "$cur"))
            else
                _npyfs_files "$cur"
            fi
            ;;
        *)
            # npyfs SOURCE MOUNTPOINT -o OPTS (the mount.fuse3 form)
            if [[ $prev == -o ]]; then
                _npyfs_complete_opts "$_npyfs_mount_opts" "$cur"
            else
                _npyfs_files "$cur"
            fi
            ;;
    esac
}
complete -F _npyfs npyfs
