"""Data-parallel training over MPI: what ``train`` asks of the other processes.

``mpirun -n N predtext train ...`` (or a script calling ``predtext.lm.train.train`` under
``mpirun``) runs N copies of the same loop. ``world()`` tells them apart:

* One process, not started by an MPI launcher (or started as ``-n 1``): ``Solo``, whose
  every method is the identity. mpi4py is not imported, and training is what it always was.
* Under MPI with N > 1: ``MPIWorld``. Each rank trains on its share of the global batch's
  token streams (``shares``), and each step the gradients of every parameter, with the loss,
  are summed in one flat float32 buffer: one ``Allreduce`` a step, not one per tensor (the
  "tensor fusion" of Horovod). Every rank then clips and steps the same gradients, so the
  parameters stay identical; rank 0 alone writes the model, the checkpoints, the log and
  the progress bar.

The global batch is ``--batch-size`` streams. When N does not divide it, the first
``B % N`` ranks take one stream more, and each rank's mean gradient is weighted by its
share of the streams, so the sum is still the mean over the whole batch: the same step as
one process, only cut differently. More ranks than streams is an error.

Parity: MPI does not promise a reduction order, so the result is the one-process result
up to rounding (float32 sums of the float32 gradients; the test holds every tensor to 1e-6
relative after 50 steps, dropout off, since each rank draws its own dropout masks).

Device arrays (``--device cuda``): where the MPI is CUDA-aware (mpi4py's
``MPI.Query_cuda_support()``) the flat buffer is a device array handed to MPI as it is;
otherwise the gradients go through host memory, one copy each way a step.

Faults: an exception on any rank prints ``rank R of N failed: <cause>`` and aborts the whole
job (``MPI_Abort``), so no rank waits forever in a collective call. A non-finite loss or
gradient on a rank is such an exception (``FloatingPointError``), where one process skips
the step: summed, it would poison every rank, and which rank went bad is worth knowing. A
rank that dies (killed, out of memory) is seen by ``mpirun``, which names its rank and
signal and ends the others. The last checkpoint is only ever replaced atomically, so it
stays resumable.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import traceback

import numpy

#: Environment variables that MPI launchers set in the processes they start
#: (Open MPI, MPICH/Hydra and PMIx-based launchers, MVAPICH).
_LAUNCHER_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_size():
    """The world size an MPI launcher gave this process, or 1 when none started it."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def launched_rank():
    """This process's rank as its MPI launcher set it (0 when none started it); cheap,
    for code that only needs to know whether it is rank 0."""
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 0


def world():
    """``Solo`` for one process, ``MPIWorld`` under an MPI launcher with more than one."""
    if launched_size() <= 1:
        return Solo()
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError("this process was started by an MPI launcher with "
                           f"{launched_size()} processes, but mpi4py is not installed: "
                           "pip install 'predtext[mpi]'") from None
    return MPIWorld(MPI)


def shares(batch_size, size):
    """Each rank's range of the global batch's streams: the first ``batch_size % size``
    ranks take one more."""
    if size > batch_size:
        raise ValueError(f"batch_size: {batch_size} streams cannot be shared by {size} "
                         f"processes (each needs at least one); use a batch_size of at least "
                         f"{size}")
    base, extra = divmod(batch_size, size)
    starts = [rank * base + min(rank, extra) for rank in range(size + 1)]
    return [range(starts[r], starts[r + 1]) for r in range(size)]


class Solo:
    """One process: nothing to share."""

    rank, size, is_root = 0, 1, True

    def streams(self, batch_size):
        return None                       # every stream

    def broadcast_parameters(self, params):
        pass

    def reduce_gradients(self, params, loss, batch_size):
        return loss

    def agree(self, seconds, interrupted, asked):
        return seconds, interrupted, asked

    def sum(self, values):
        return list(values)

    def broadcast_json(self, make):
        return make()

    def broadcast_file(self, path):
        return path

    def gather_rows(self, array, batch_size):
        return array

    def barrier(self):
        pass

    def failing_together(self):
        return contextlib.nullcontext()


class MPIWorld:
    """The processes of ``MPI.COMM_WORLD``, each training on its share of the batch."""

    def __init__(self, MPI):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.is_root = self.rank == 0
        self._buffer = None

    #: The fused gradient buffer's type. float32, the gradients' own type, halves the bytes
    #: on the wire against float64 and packing is a plain copy; the sum of float32 gradients
    #: kept parity as well as float64 did (two ranks after 50 steps: 3.4e-7 of the largest
    #: value against 3.2e-7, the test's bound 1e-6), since Adam's step is far coarser than
    #: one rounding of the sum.
    buffer_dtype = numpy.float32

    def streams(self, batch_size):
        return shares(batch_size, self.size)[self.rank]

    def broadcast_parameters(self, params):
        """Rank 0's values in every rank's parameters (one flat Bcast)."""
        params = list(params)
        flat = numpy.concatenate([_host(p.data).ravel().astype(numpy.float64) for p in params])
        self.comm.Bcast(flat, root=0)
        self._unflatten(flat, params, "data")

    def reduce_gradients(self, params, loss, batch_size):
        """Sum every rank's gradients, weighted by its share of the batch, in one Allreduce;
        returns the whole batch's mean loss."""
        params = list(params)
        weight = len(self.streams(batch_size)) / batch_size
        n = sum(p.grad.size for p in params)
        ops = _ops_of(params[0].grad)
        # Device gradients stay there when MPI can read device memory; else via the host.
        xp = ops.xp if ops.device != "cpu" and self._cuda_aware() else numpy
        if (self._buffer is None or self._buffer.size != n + 1
                or not isinstance(self._buffer, xp.ndarray)):
            self._buffer = xp.empty(n + 1, dtype=self.buffer_dtype)
        buffer, at = self._buffer, 0
        for p in params:
            grad = p.grad if xp is not numpy else _host(p.grad)
            buffer[at:at + p.grad.size] = grad.ravel()
            at += p.grad.size
        # One process skips a step whose loss or gradient is not finite; here it would
        # poison every rank's sum, and a rank whose share goes bad should be seen, not
        # averaged away, so it ends the job naming this rank (before the Allreduce: the
        # others wait in it until the abort). The dot product is one cheap pass that is
        # nan or inf when some gradient is (or when the gradient's norm passes 1e19, which
        # no training survives either).
        squares = float(xp.dot(buffer[:n], buffer[:n]))   # a host read: the Allreduce waits anyway
        if not (math.isfinite(float(loss)) and math.isfinite(squares)):
            what = f"loss ({float(loss)})" if not math.isfinite(float(loss)) else "gradient"
            raise FloatingPointError(
                f"non-finite {what} "
                "on this rank's share of the batch; under MPI that ends the job instead of "
                "skipping the step, and the last checkpoint is kept")
        buffer[:n] *= weight
        buffer[n] = (loss if xp is not numpy else float(loss)) * weight
        if xp is not numpy:     # MPI reads the memory itself: the queued work must be done
            xp.cuda.get_current_stream().synchronize()
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        self._unflatten(buffer, params, "grad")
        return buffer[n].copy() if xp is not numpy else float(buffer[n])

    def _cuda_aware(self):
        """Whether this MPI reads CUDA device memory (mpi4py 4's query; False without it)."""
        query = getattr(self.MPI, "Query_cuda_support", None)
        try:
            return bool(query()) if query is not None else False
        except Exception:  # noqa: BLE001 (an MPI without the extension: not aware)
            return False

    def agree(self, seconds, interrupted, asked):
        """One clock and one decision to stop for all ranks: the largest of each."""
        values = numpy.array([seconds, float(interrupted), float(asked)])
        self.comm.Allreduce(self.MPI.IN_PLACE, values, op=self.MPI.MAX)
        return float(values[0]), bool(values[1]), bool(values[2])

    def sum(self, values):
        array = numpy.array(values, dtype=numpy.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
        return array.tolist()

    def broadcast_json(self, make):
        """``make()`` on rank 0, its JSON value on every rank (an error there stops all)."""
        text = json.dumps(make()).encode() if self.is_root else b""
        return json.loads(self._broadcast_bytes(text))

    def broadcast_file(self, path):
        """Rank 0's file, for the others a local copy of it (a checkpoint to resume from,
        which rank 0 alone wrote)."""
        data = b""
        if self.is_root:
            from predtext.lm import modelfile  # the error names the file, as without MPI

            modelfile.read_meta(path)
            with open(path, "rb") as f:
                data = f.read()
        data = self._broadcast_bytes(data)
        if self.is_root:
            return path
        handle, copy = tempfile.mkstemp(prefix=f"predtext-rank{self.rank}-", suffix=".ckpt")
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        return copy

    def gather_rows(self, array, batch_size):
        """The (L, B, H) array of the whole batch on rank 0 from each rank's (L, b, H)
        columns (None elsewhere)."""
        counts = [len(r) for r in shares(batch_size, self.size)]
        rows = numpy.ascontiguousarray(array.transpose(1, 0, 2))     # (b, L, H)
        per_stream = rows[0].size
        out = (numpy.empty((batch_size,) + rows.shape[1:], dtype=rows.dtype) if self.is_root
               else None)
        self.comm.Gatherv(rows, [out, [c * per_stream for c in counts], None,
                                 self.MPI._typedict[rows.dtype.char]] if self.is_root else None,
                          root=0)
        return None if out is None else numpy.ascontiguousarray(out.transpose(1, 0, 2))

    def barrier(self):
        self.comm.Barrier()

    @contextlib.contextmanager
    def failing_together(self):
        """An exception inside ends the whole job, naming this rank and the cause."""
        try:
            yield
        except BaseException as exc:   # KeyboardInterrupt too: the other ranks must not wait
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            print(f"predtext train: rank {self.rank} of {self.size} failed: {detail}",
                  file=sys.stderr, flush=True)
            if os.environ.get("PREDTEXT_DEBUG"):
                traceback.print_exc()
            self.comm.Abort(1)
            raise

    # --

    def _broadcast_bytes(self, data):
        length = numpy.array([len(data)], dtype=numpy.int64)
        self.comm.Bcast(length, root=0)
        buffer = numpy.frombuffer(data, dtype=numpy.uint8).copy() if self.is_root \
            else numpy.empty(int(length[0]), dtype=numpy.uint8)
        self.comm.Bcast(buffer, root=0)
        return buffer.tobytes()

    @staticmethod
    def _unflatten(flat, params, attribute):
        at = 0
        for p in params:
            target = getattr(p, attribute)
            # asarray: host values copied to a device target (no copy on the CPU).
            target[...] = _ops_of(target).asarray(flat[at:at + target.size].reshape(target.shape))
            at += target.size


def _ops_of(array):
    # Imported here: only the MPI path needs it.
    from predtext.backend import ops_of

    return ops_of(array)


def _host(array):
    """A NumPy view or copy of a parameter's array, wherever it lives."""
    return numpy.asarray(_ops_of(array).to_numpy(array))
