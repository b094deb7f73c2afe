#!/bin/sh
# Writes legacy-commands.tsv: the remote commands that the stock rsync and
# OpenSSH scp clients of this machine start, each after the verdict that
# TestLegacyTransferRealCommands expects under a rule of that direction
# (upload_only with upload_to [/tmp/up], or download_only; both with
# legacy_transfers [scp, rsync]):
#
#	RULE<TAB>VERDICT<TAB>CLIENT<TAB>REMOTE COMMAND
#
# VERDICT is "ok" or a part of the refusal. Run from session/testdata:
# sh legacy-commands.sh > legacy-commands.tsv
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The remote shell: skips ssh's options and the host, prints the command.
cat > "$tmp/ssh" <<'SH'
#!/bin/sh
while [ $# -gt 0 ]; do
	case "$1" in
	-l|-p) shift 2 ;;
	-*) shift ;;
	*) break ;;
	esac
done
shift
printf '%s\n' "$*" > "${0%/ssh}/cmd"
exit 1
SH
chmod +x "$tmp/ssh"
mkdir "$tmp/src" "$tmp/dst"
echo x > "$tmp/src/f"
echo f > "$tmp/list"
cd "$tmp"
row() { # RULE VERDICT CLIENT...
	rule=$1 verdict=$2
	shift 2
	rm -f cmd
	client="$*" program=$1
	shift
	case $program in
	rsync) rsync -e "$tmp/ssh" "$@" >/dev/null 2>&1 </dev/null || true ;;
	scp) scp -O -S "$tmp/ssh" "$@" >/dev/null 2>&1 </dev/null || true ;;
	esac
	[ -s cmd ] || { echo "$client: no remote command" >&2; exit 1; }
	printf '%s\t%s\t%s\t%s\n' "$rule" "$verdict" "$client" "$(cat cmd)"
}
up=upload_only down=download_only
# Uploads a stock client starts for plain transfers.
row $up ok rsync -rtW src/ h:/tmp/up/
row $up ok rsync -rtvW src/ h:/tmp/up/
row $up ok rsync -rtpW src/ h:/tmp/up/sub/
row $up ok rsync -rtWP src/ h:/tmp/up/
row $up ok rsync -rtWi src/ h:/tmp/up/
row $up ok rsync -rtWz --compress-level=3 src/ h:/tmp/up/
row $up ok rsync -rtW --zc=zstd src/ h:/tmp/up/
row $up ok rsync -rtW --partial src/ h:/tmp/up/
row $up ok rsync -rtW --info=progress2 src/ h:/tmp/up/
row $up ok rsync -rtW --info=name src/ h:/tmp/up/
row $up ok rsync -rtW --chmod=u+rw src/ h:/tmp/up/
row $up ok rsync -rtW --mkpath src/ h:/tmp/up/a/b/
row $up ok rsync -rtW --stats --timeout=30 --bwlimit=100 src/ h:/tmp/up/
row $up ok rsync -rtWvvq -O -I -E src/ h:/tmp/up/
row $up ok rsync -W src/f h:/tmp/up
row $up ok rsync -rtW src/ "h:/tmp/up/dir with space/it's/"
row $up ok rsync -rtW src/ h:/tmp//up/./x/
# Uploads refused, with what names the refusal.
row $up "-s (--secluded-args)" rsync -s src/ h:/tmp/up/
row $up "-s (--secluded-args)" rsync -sW src/ h:/tmp/up/
row $up "-s (--secluded-args)" rsync --protect-args -W src/ h:/tmp/up/
row $up "-s (--secluded-args)" rsync --secluded-args -W src/ h:/tmp/up/
row $up "-s (--secluded-args)" rsync -s -W --files-from=:/etc/passwd src/ h:/tmp/
row $up "--files-from is refused under rule \"r\": it has the target read a file of its own" rsync -W --files-from=:/etc/passwd src/ h:/tmp/up/
row $up "--delete is refused" rsync -rW --delete src/ h:/tmp/up/
row $up "--delete-after is refused" rsync -rtW --delete-after src/ h:/tmp/up/
row $up "--delete is refused" rsync -rvn --delete src/ h:/any/dir/
row $up "-n (--dry-run)" rsync -rtW --dry-run src/ h:/tmp/up/
row $up "--list-only" rsync -rtW --list-only src/ h:/tmp/up/
row $up "--remove-source-files" rsync -rW --remove-source-files src/ h:/tmp/up/
row $up "-c (--checksum)" rsync -cW src/ h:/tmp/up/
row $up "-l (--links)" rsync -a src/ h:/tmp/up/
row $up "-l (--links)" rsync -avzW src/ h:/tmp/up/
row $up "-D (--devices --specials)" rsync -rtWD src/ h:/tmp/up/
row $up "--specials" rsync -rtW --specials src/ h:/tmp/up/
row $up "-K (--keep-dirlinks)" rsync -rtWK src/ h:/tmp/up/
row $up "-y (--fuzzy)" rsync -rtW --fuzzy src/ h:/tmp/up/
row $up "--backup-dir" rsync -rtW --backup-dir=/x src/ h:/tmp/up/
row $up "--temp-dir" rsync -rtW -T /x src/ h:/tmp/up/
row $up "--partial-dir" rsync -rtW --partial-dir=/x src/ h:/tmp/up/
row $up "--link-dest" rsync -rtW --link-dest=/etc src/ h:/tmp/up/
row $up "--compare-dest" rsync -rtW --compare-dest=/etc src/ h:/tmp/up/
row $up "--copy-dest" rsync -rtW --copy-dest=/etc src/ h:/tmp/up/
row $up "--inplace" rsync -rtW --inplace src/ h:/tmp/up/
row $up "--append" rsync -rt --append src/ h:/tmp/up/
row $up "--size-only" rsync -rtW --size-only src/ h:/tmp/up/
row $up "-u (--update)" rsync -rtWu src/ h:/tmp/up/
row $up "--iconv" rsync -rtW --iconv=utf8 src/ h:/tmp/up/
row $up "--whole-file (-W)" rsync -rt src/ h:/tmp/up/
row $up "only uploads" rsync -rtW -M--sender src/ h:/tmp/up/
row $up "only uploads" rsync -rtW h:/tmp/up/f dst/
row $up "uploads land inside /tmp/up only" rsync -rtW src/ h:/etc/
row $up "without .." rsync -rtW src/ h:/tmp/up/../../etc/
row $up "relative" rsync -rtW src/ h:sub/
row $up "relative" rsync -rtW src/ h:
row $up "relative" rsync -rtW src/ h:-odd
row $up "this rsync command" rsync -rtW src/ h:~/x
row $up "one destination" rsync -rtW --old-args src/ "h:/tmp/up/a b"
row $up ok scp src/f h:/tmp/up/
row $up ok scp -r -p src h:/tmp/up/
row $up ok scp src/f src/f h:/tmp/up/
row $up ok scp -v src/f "h:'/tmp/up/a b'"
row $up "uploads land inside /tmp/up only" scp src/f h:/etc/cron.d/x
row $up "without .." scp src/f h:/tmp/up/../x
row $up "relative" scp src/f h:
row $up "relative" scp src/f h:-odd
row $up "one path" scp src/f "h:/tmp/up/a b"
row $up "only uploads" scp h:/etc/passwd dst/
# Downloads.
row $down ok rsync -a h:/srv/ dst/
row $down ok rsync -avz h:/srv/ dst/
row $down ok rsync -rt h:/srv/ dst/
row $down ok rsync -P h:/srv/f dst/
row $down ok rsync -rtL h:/srv/ dst/
row $down ok rsync -aH h:/srv/ dst/
row $down ok rsync -c h:/srv/ dst/
row $down ok rsync -n h:/srv/ dst/
row $down ok rsync --list-only h:/srv/ dst/
row $down ok rsync --files-from=:/tmp/list h:/srv/ dst/
row $down ok rsync --files-from=list h:/srv/ dst/
row $down ok rsync -rt --inplace h:/srv/ dst/
row $down ok rsync -rt --append h:/srv/ dst/
row $down ok rsync -rvn --delete h:/srv/ dst/
row $down ok rsync -rt --info=progress2 h:/srv/ dst/
row $down ok rsync -rt h:/srv/a h:/srv/b dst/
row $down "--remove-source-files" rsync --remove-source-files h:/srv/ dst/
row $down "-s (--secluded-args)" rsync -s h:/srv/ dst/
row $down "-B (--block-size)" rsync -rt -B1024 h:/srv/ dst/
row $down "only downloads" rsync -a src/ h:/srv/
row $down ok scp h:/etc/hosts dst/
row $down ok scp -r -p h:/srv dst/
row $down ok scp -v h:/srv/f dst/
row $down ok scp h:-odd dst/
row $down "only downloads" scp src/f h:/tmp/
