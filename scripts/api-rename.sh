#!/bin/sh
# SPDX-License-Identifier: MIT
# scripts/api-rename.sh: apply the 0.1 public API renames (docs/api-names.md)
# to the source tree, so a branch written with the old names can be merged
# first and renamed after. Run from the top of the tree; idempotent: a
# second run changes nothing.
#
# Beside the pure renames (whole words only) it makes two mechanical edits
# that no rename can express:
# - weft_future_then takes arg_dtor: the five-argument form is folded into
#   weft_future_then_dtor (a NULL arg_dtor added to each call), and that is
#   renamed weft_future_then;
# - weft_allocator_t gained reserved slots: a three-value initialiser
#   {alloc, release, ctx} gets ", {0}" so -Wmissing-field-initializers
#   stays quiet.
set -eu

cd "$(dirname "$0")/.."

# old new, one pair a line: every public name that changed.
renames='
weft_listen weft_socket_listen
weft_accept weft_socket_accept
weft_connect weft_socket_connect
weft_read weft_socket_read
weft_read_exactly weft_socket_read_exactly
weft_write weft_socket_write
weft_shutdown weft_socket_shutdown
weft_udp_bind weft_socket_udp_bind
weft_udp_send weft_socket_udp_send
weft_udp_recv weft_socket_udp_recv
weft_socket_local weft_socket_local_addr
weft_socket_peer weft_socket_peer_addr
weft_socket_nodelay weft_socket_set_nodelay
weft_addr_ip weft_addr_init_ip
weft_addr_unix weft_addr_init_unix
weft_set_allocator weft_allocator_set
weft_alloc_trim weft_allocator_trim
weft_now_ns weft_clock_now_ns
weft_strerror weft_error_message
weft_err_name weft_error_name
weft_err_from_errno weft_error_from_errno
weft_job_cancelled weft_job_is_cancelled
weft_timer_active weft_timer_is_active
weft_thread_executor_destroy weft_thread_executor_shutdown
weft_future_ninputs weft_future_input_count
weft_loop_fd weft_loop_backend_fd
weft_loop_timeout_ms weft_loop_backend_timeout
weft_loop_signal weft_signal_next
'

# The files: sources, build files and docs under these paths. The table of
# old and new names (docs/api-names.md) and this script keep the old names.
files=$(find include lib pool loop tests samples bench docs scripts README.md \
  -type f \( -name '*.c' -o -name '*.h' -o -name '*.in' -o -name '*.cpp' \
  -o -name '*.md' -o -name '*.sh' -o -name '*.txt' -o -name '*.cmake' \) \
  ! -path docs/api-names.md ! -path scripts/api-rename.sh 2>/dev/null | sort)

# 1. Fold weft_future_then into weft_future_then_dtor.
#    a. the five-argument wrapper's definition and declaration go;
#    b. each call with five arguments gets a NULL arg_dtor before `out`
#       (a parameter list, with its types, is left alone);
#    c. weft_future_then_dtor becomes weft_future_then (step 3).
# shellcheck disable=SC2086
perl -0pi -e '
  s{^int[ \t]+weft_future_then\(\s*weft_future_t\s*\*\w+,\s*weft_executor_t\s*\*\w+,\s*weft_then_fn\s+\w+,\s*void\s*\*\w+,\s*weft_future_t\s*\*\*\w+\)\s*\{\s*return\s+weft_future_then_dtor\([^;]*\);\s*\}\n\n?}{}mg;
  s{^/\*\* weft_future_then_dtor\(\) with no argument destructor\. \*/\nWEFT_EXTERN int weft_future_then\([^;]*\);\n\n?}{}mg;
  s{\bweft_future_then(\s*)(\((?:[^()]++|(?2))*\))}{
    my ($sp, $args) = ($1, $2);
    my ($depth, @commas) = (0);
    for my $i (1 .. length($args) - 2) {
      my $c = substr($args, $i, 1);
      $depth++ if $c eq "(";
      $depth-- if $c eq ")";
      push @commas, $i if $c eq "," && $depth == 0;
    }
    if (@commas == 4 && $args !~ /\bweft_\w+_t\s*\*|\bweft_then_fn\s+\w/) {
      substr($args, $commas[3] + 1, 0) = " NULL,";
    }
    "weft_future_then$sp$args"
  }ge;
' $files

# 2. Three-value weft_allocator_t initialisers get the reserved slots.
# shellcheck disable=SC2086
perl -pi -e 's/(\bweft_allocator_t\s+\w+\s*=\s*\{[^{};,]*,[^{};,]*,[^{};,]*)\};/$1, {0}};/g' $files

# 3. The pure renames, whole words only.
script=$(printf '%s\n' "$renames" | awk 'NF == 2 {
  printf "s/\\b%s\\b/%s/g;", $1, $2 }')
script="${script}s/\\bweft_future_then_dtor\\b/weft_future_then/g;"
# shellcheck disable=SC2086
perl -pi -e "$script" $files
