#!/usr/bin/perl
# A socket holder that starts a child as systemd's socket activation does (sd_listen_fds(3)):
# it binds a UDP and a TCP socket on 127.0.0.1 itself, keeps them open for as long as it runs,
# and starts the child with them as fds 3 (UDP) and 4 (TCP), LISTEN_FDS=2,
# LISTEN_FDNAMES=dns:dns and LISTEN_PID=<the child's own pid>. Between two children (a restart)
# nobody reads the sockets, so the kernel queues datagrams and completes TCP handshakes into the
# listen backlog, which is the property a restart under systemd relies on.
#
# Why Perl and not Node: LISTEN_PID must be the pid of the process that reads the sockets.
# Node's child_process spawns in one step, so the pid is known only after the environment has
# been handed over; and Node cannot place arbitrary fds at 3 and 4 of a child without keeping
# them in its own event loop. A holder that fork()s, sets LISTEN_PID=$$ in the child, dup2()s
# the sockets to 3 and 4 and exec()s is what systemd itself does, in a dozen lines, with the
# Perl that every Debian system has (perl-base), and no native Node module.
#
# Usage: activator.pl [--no-sockets] [--port N] [--rcvbuf BYTES] -- COMMAND ARGS...
#   --no-sockets  start the child without sockets or LISTEN_* (the comparison: the child binds
#                 its own ports and a restart closes them)
#   --port N      bind port N instead of a free one (UDP and TCP share the port either way)
#   --stream-first  TCP as fd 3 and UDP as fd 4 (a socket unit listing ListenStream= first):
#                 the order is the unit's, so a child must not assume it
# Control: fd 3 of this process (if open) receives one JSON line per event:
#   {"event":"listening","port":N}  {"event":"spawned","pid":P}  {"event":"exited","pid":P,"code":C,"signal":S}
# and stdin takes commands, one per line: "restart" (SIGTERM the child, wait, start a new one on
# the same sockets), "stop" (SIGTERM the child, wait, exit). EOF on stdin is "stop", so the
# holder never outlives the test that started it. The child inherits stdout and stderr.
use strict;
use warnings;
use Socket qw(:all);
use POSIX qw(:sys_wait_h dup2 _exit);
use Fcntl qw(F_DUPFD);
use IO::Handle;
use IO::Select;
use Time::HiRes qw(time sleep);

my ($no_sockets, $port, $rcvbuf, $stream_first) = (0, 0, 4 * 1024 * 1024, 0);
while (@ARGV && $ARGV[0] ne '--') {
  my $a = shift @ARGV;
  if ($a eq '--no-sockets') { $no_sockets = 1 }
  elsif ($a eq '--port') { $port = shift @ARGV }
  elsif ($a eq '--stream-first') { $stream_first = 1 }
  elsif ($a eq '--rcvbuf') { $rcvbuf = shift @ARGV }
  else { die "activator: unknown option $a\n" }
}
shift @ARGV;
die "activator: no command after --\n" unless @ARGV;
my @cmd = @ARGV;

my $ctl;
if (open($ctl, '>&=', 3)) { $ctl->autoflush(1) } else { $ctl = undef }
sub event { my ($json) = @_; print $ctl "$json\n" if $ctl; }

my ($udp, $tcp);
unless ($no_sockets) {
  # TCP first on the requested (or a free) port, then UDP on the same number, as a socket unit
  # with ListenStream= and ListenDatagram= on one address. A free TCP port can be taken for UDP:
  # retry with another one.
  for my $try (1 .. 50) {
    socket($tcp, PF_INET, SOCK_STREAM, 0) or die "activator: socket: $!\n";
    setsockopt($tcp, SOL_SOCKET, SO_REUSEADDR, 1) or die "activator: SO_REUSEADDR: $!\n";
    bind($tcp, pack_sockaddr_in($port, inet_aton('127.0.0.1'))) or die "activator: bind tcp: $!\n";
    # systemd's Backlog= default is SOMAXCONN.
    listen($tcp, SOMAXCONN) or die "activator: listen: $!\n";
    my ($p) = unpack_sockaddr_in(getsockname($tcp));
    socket($udp, PF_INET, SOCK_DGRAM, 0) or die "activator: socket: $!\n";
    # The socket unit's ReceiveBuffer=: the queue that carries datagrams across a restart.
    setsockopt($udp, SOL_SOCKET, SO_RCVBUF, $rcvbuf) or die "activator: SO_RCVBUF: $!\n";
    if (bind($udp, pack_sockaddr_in($p, inet_aton('127.0.0.1')))) { $port = $p; last }
    die "activator: bind udp $p: $!\n" if $port;
    close($tcp); close($udp); undef $tcp; undef $udp;
  }
  die "activator: no port free for both UDP and TCP\n" unless defined $udp;
  event(qq({"event":"listening","port":$port}));
}

my $child = 0;
my $stopping = 0;

sub spawn_child {
  my $pid = fork();
  die "activator: fork: $!\n" unless defined $pid;
  if ($pid == 0) {
    close($ctl) if $ctl;
    if (!$no_sockets) {
      # Move both out of the way first (the target numbers may be taken by either of them),
      # then onto 3 and 4; dup2 leaves the targets without FD_CLOEXEC, so exec keeps them.
      my $u = fcntl($udp, F_DUPFD, 10) or _exit(126);
      my $t = fcntl($tcp, F_DUPFD, 10) or _exit(126);
      my ($first, $second) = $stream_first ? ($t, $u) : ($u, $t);
      dup2($first, 3) == 3 or _exit(126);
      dup2($second, 4) == 4 or _exit(126);
      POSIX::close($u); POSIX::close($t);
      $ENV{LISTEN_FDS} = '2';
      $ENV{LISTEN_FDNAMES} = 'dns:dns';
      $ENV{LISTEN_PID} = "$$";
    } else {
      delete @ENV{qw(LISTEN_FDS LISTEN_FDNAMES LISTEN_PID)};
    }
    # The child does not read our commands.
    open(STDIN, '<', '/dev/null');
    { no warnings 'exec'; exec { $cmd[0] } @cmd; }
    print STDERR "activator: exec $cmd[0]: $!\n";
    _exit(127);
  }
  $child = $pid;
  event(qq({"event":"spawned","pid":$pid}));
}

sub report_exit {
  my ($pid, $status) = @_;
  my $code = WIFEXITED($status) ? WEXITSTATUS($status) : 'null';
  my $sig = WIFSIGNALED($status) ? WTERMSIG($status) : 'null';
  event(qq({"event":"exited","pid":$pid,"code":$code,"signal":$sig}));
  $child = 0 if $pid == $child;
}

sub reap { while ((my $pid = waitpid(-1, WNOHANG)) > 0) { report_exit($pid, $?) } }

# SIGTERM the child and wait for it (SIGKILL after 15 s, longer than any drain a test sets).
sub stop_child {
  return unless $child;
  my $pid = $child;
  kill 'TERM', $pid;
  my $deadline = time + 15;
  while ($child == $pid) {
    if (waitpid($pid, WNOHANG) == $pid) { report_exit($pid, $?); last }
    if (time > $deadline) { kill 'KILL', $pid; $deadline = time + 5 }
    sleep 0.005;
  }
}

$SIG{TERM} = $SIG{INT} = sub { $stopping = 1 };
$SIG{PIPE} = 'IGNORE';

spawn_child();
my $sel = IO::Select->new(\*STDIN);
my $buf = '';
until ($stopping) {
  reap();
  next unless $sel->can_read(0.02);
  my $n = sysread(STDIN, $buf, 4096, length $buf);
  last if !$n;
  while ($buf =~ s/^([^\n]*)\n//) {
    my $cmd = $1;
    if ($cmd eq 'restart') { stop_child(); spawn_child() }
    elsif ($cmd eq 'stop') { $stopping = 1; last }
    else { print STDERR "activator: unknown command '$cmd'\n" }
  }
}
stop_child();
reap();
exit 0;
