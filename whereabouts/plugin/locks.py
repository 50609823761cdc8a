"""The locks of one pool, together: the node-local lock first, so the pods of one node queue
locally, then (where the mode has one) the cluster-wide Lease."""

from __future__ import annotations

from whereabouts.plugin.nodelock import NodeLock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from whereabouts.k8s.lease import LeaseLock
    from whereabouts.plugin.txn import Txn


class Locked:
    """`with Locked(txn, name, lease_name) as node_lock`: the node-local lock `name`, then the Lease
    `lease_name` unless it is None (node-affine blocks need none); released in reverse on exit.
    A class rather than `contextlib.contextmanager`, whose import every pod attach would pay."""

    def __init__(self, txn: Txn, name: str, lease_name: str | None) -> None:
        self.txn, self.name, self.lease_name = txn, name, lease_name
        self.node: NodeLock | None = None
        self.lease: LeaseLock | None = None

    def __enter__(self) -> NodeLock:
        txn = self.txn
        node = NodeLock(txn.config.node_lock_dir, self.name, txn.deadline)
        node_held = node.acquire()
        try:
            if self.lease_name is None:
                txn.stats.lock_wait += node.waited
                txn.log.debug("lock", pool=self.name, node_lock=node_held, node_wait=round(node.waited, 4))
            else:
                lease = txn.leases(self.lease_name)
                lease.acquire()
                self.lease = lease
                txn.stats.lock_wait += node.waited + lease.waited
                txn.log.debug("lock", pool=self.name, lease=lease.name, node_lock=node_held,
                              node_wait=round(node.waited, 4), lease_wait=round(lease.waited, 4),
                              lease_attempts=lease.attempts)
        except BaseException:
            node.release()
            raise
        self.node = node
        return node

    def __exit__(self, *exc: object) -> None:
        assert self.node is not None
        try:
            if self.lease is not None:
                self.lease.release()
                if self.lease.renewals:
                    self.txn.log.debug("lease renewed", lease=self.lease.name, renewals=self.lease.renewals)
        finally:
            self.node.release()
            self.node = self.lease = None
