#!/bin/bash
# The manual pages (make lint runs this): mandoc's lint is clean, and no
# sentence is swallowed by a macro (after ".Fl x ," every further word is
# another flag: seva-pair(1) rendered "-s" as "0 -to -2^53-1 -so -that ...",
# which lint does not see), nor a quote by mdoc's argument quoting.
. "$(dirname "$0")/lib.sh"
if ! command -v mandoc >/dev/null; then
	echo "ok 1 # skip mandoc not installed"; echo "1..1"; exit 0
fi
expect "mandoc -Tlint -Wwarning" mandoc -Tlint -Wwarning "$TOP"/man/*.[1-9]
bad=$(grep -nE '^\.(Fl|Ar|Cm|Li) .* [,;:] +[a-z0-9^][^ ]* +[a-z]' "$TOP"/man/*.[1-9])
check "no prose on a .Fl/.Ar/.Cm/.Li line after its punctuation${bad:+: $bad}" -z "$bad"
# a double quote that opens a macro argument groups words and is not shown:
# {"bytes": N, "sha256": ...} rendered as {"bytes": N, sha256: ...}; the
# character is \(dq there
bad=$(grep -nE '^\.[A-Z][a-z]{1,2} (.* )?"[^" ]*"[^ ]' "$TOP"/man/*.[1-9])
check "no quoted macro argument glued to what follows${bad:+: $bad}" -z "$bad"
bad=$(grep -nE '^\.(.* )?Qq .* Qq ' "$TOP"/man/*.[1-9])
check "no Qq inside Qq on one line (its quotes pile up at the end)${bad:+: $bad}" -z "$bad"
expect "render seva-pair(1)" mandoc -Tascii "$TOP/man/seva-pair.1"
check "seva-pair -s reads as a sentence" \
	-n "$(col -b <"$TMP/.out" | tr -s ' \t\n' '   ' | grep -o 'Seed for --random-negative, 0 to 2^53-1, so that JSON keeps it exactly; default 0')"
done_testing
