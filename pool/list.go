package pool

// links live inside the nodes so that moving an instance between idle and
// busy, which happens on every call, allocates nothing (container/list
// would allocate an element per push).
type links[T any] struct{ prev, next *T }

// ilist is a doubly linked list threaded through links inside its nodes; at
// picks which links, so one node can sit on two lists at once.
type ilist[T any] struct {
	head, tail *T
	n          int
	at         func(*T) *links[T]
}

func (l *ilist[T]) pushBack(x *T) {
	lx := l.at(x)
	lx.prev, lx.next = l.tail, nil
	if l.tail != nil {
		l.at(l.tail).next = x
	} else {
		l.head = x
	}
	l.tail = x
	l.n++
}

// remove must only be given a node that is on l.
func (l *ilist[T]) remove(x *T) {
	lx := l.at(x)
	if lx.prev != nil {
		l.at(lx.prev).next = lx.next
	} else {
		l.head = lx.next
	}
	if lx.next != nil {
		l.at(lx.next).prev = lx.prev
	} else {
		l.tail = lx.prev
	}
	lx.prev, lx.next = nil, nil
	l.n--
}
