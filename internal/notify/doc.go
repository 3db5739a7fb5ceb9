// Package notify is forkd's NOTIFY_SOCKET: the datagram socket its workers
// (and any other process it supervises) send sd_notify(3) messages to, and
// the actor that alone reads it and keeps their heartbeat deadlines.
//
// A Socket is created with Listen (or Adopt, after an upgrade) and run
// with Run on a goroutine of its own, which is the only one to touch the
// socket, its epoll set and its timers. Its users are Consumers: each
// tells the socket, by message, which pids are its own (Watch, with a
// heartbeat timeout or none) and which to forget (Forget), and receives on
// Notes what those pids send, in order, less the heartbeats the socket
// keeps to itself, plus the pids whose heartbeat deadline passed. What a
// pid nobody watches sends goes to the socket's fallback consumer.
//
// # Quiet
//
// Workers heartbeat every half timeout or so; read one by one they would
// wake forkd every few seconds for nothing. While every consumer allows it
// (AllowQuiet) and nothing but heartbeats arrived for a while, the socket
// leaves the kernel to queue the datagrams and wakes, on a timerfd, only to
// drain them — at the earliest heartbeat deadline, or sooner when the
// queue (net.unix.max_dgram_qlen) could fill at the heartbeat rates seen.
// Its system calls are raw, so an idle forkd does not wake the Go
// runtime's monitor thread either. A message other than a heartbeat that
// arrives meanwhile is delivered at the next drain; a Forget delivers
// everything sent before it at once. A sender that uses sd_notify_barrier
// (BARRIER=1) keeps the socket watched for good: a barrier waits until its
// message is read.
package notify
