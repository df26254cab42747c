package idlepoll

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// epoll is sysPoller on Linux: an epoll set with one-shot, level-triggered
// registrations, and an eventfd in it for wakes.
type epoll struct {
	epfd   int
	wakefd int
	events []unix.EpollEvent // owned by the waiter
}

// wakeKey is the eventfd's key; watches' keys start at 1.
const wakeKey = 0

func newSysPoller() (sysPoller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("idlepoll: epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("idlepoll: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setKey(&ev, wakeKey)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(wakefd)
		unix.Close(epfd)
		return nil, fmt.Errorf("idlepoll: epoll_ctl: %w", err)
	}
	return &epoll{epfd: epfd, wakefd: wakefd, events: make([]unix.EpollEvent, 128)}, nil
}

// setKey stores key in the event's 64-bit user data (Fd and Pad).
func setKey(ev *unix.EpollEvent, key uint64) {
	ev.Fd = int32(uint32(key))
	ev.Pad = int32(uint32(key >> 32))
}

func keyOf(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

func (e *epoll) arm(fd int, key uint64, again bool) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setKey(&ev, key)
	op := unix.EPOLL_CTL_ADD
	if again {
		op = unix.EPOLL_CTL_MOD
	}
	if err := unix.EpollCtl(e.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("idlepoll: epoll_ctl: %w", err)
	}
	return nil
}

func (e *epoll) remove(fd int) {
	_ = unix.EpollCtl(e.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

func (e *epoll) wait(keys []uint64, timeout int) []uint64 {
	n, err := unix.EpollWait(e.epfd, e.events, timeout)
	if err != nil { // EINTR: the caller loops
		return keys
	}
	for i := range n {
		k := keyOf(&e.events[i])
		if k == wakeKey {
			var b [8]byte
			_, _ = unix.Read(e.wakefd, b[:])
			continue
		}
		keys = append(keys, k)
	}
	return keys
}

func (e *epoll) wake() {
	b := [8]byte{1}
	_, _ = unix.Write(e.wakefd, b[:])
}

func (e *epoll) close() error {
	unix.Close(e.wakefd)
	return unix.Close(e.epfd)
}
