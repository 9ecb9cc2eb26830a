# Sourced by the queue benchmarks: sets `server_cpu` (an array to prefix
# the server's command with) and `contender_cpu` (a string to prefix each
# contender's command with).
#
# Where the machine has two cores or more, the server gets the first and
# the contenders the second (taskset), so a contender's CPU per message
# decides its own rate instead of taking cycles from the server's.
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  server_cpu=(taskset -c 0)
  contender_cpu="taskset -c 1 "
else
  server_cpu=()
  contender_cpu=""
fi
