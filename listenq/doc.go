// Package listenq reads the kernel's accept queue of a listening socket:
// how many connections wait to be accepted, and the backlog that bounds
// them, as ss(8) shows them in Recv-Q and Send-Q for a socket in LISTEN.
//
// It asks the kernel through sock_diag(7) over netlink: inet_diag for TCP
// (and MPTCP) over IPv4 and IPv6, unix_diag for unix stream and seqpacket sockets. The
// socket is identified by its inode, so it works on any listener the caller
// holds an fd of, whoever bound it (forkd itself or systemd), and whatever
// other sockets share its address.
//
//	q, err := listenq.Read(f) // f: a listening socket's *os.File
//	fmt.Printf("%d of %d waiting\n", q.Len, q.Backlog)
package listenq
