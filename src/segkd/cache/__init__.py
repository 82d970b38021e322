"""Teacher cache: the frozen teacher's outputs computed once and replayed every epoch.

``segkd cache-teacher CONFIG`` (:mod:`segkd.engine.teacher_cache`) runs the teacher once over the
un-augmented training images (:mod:`.writer`) and stores the maps the configured terms read
(:meth:`DistillLoss.teacher_reads`):
``logits`` (and ``aux_logits``) at the teacher's own resolution, ``feat`` when a feature term asks for it,
in float32, float16 or top-k form (:mod:`.codec`), one atomic file per image (:mod:`.store`), with the
teacher's weights hash, the class list and the preprocessing (:mod:`.fingerprint`). A run with
``distill.teacher.cache: DIR`` (:mod:`.attach`) checks them, then each training sample carries the
cached maps resampled with the sample's own scale, crop and flip (:mod:`.replay`), and the terms read those
instead of a teacher forward. :mod:`segkd.bench.cache` measures what the approximation costs
(``segkd bench cache``), including the FKD alternative of storing a fixed set of crops per image
(:mod:`.fkd`). See docs/TEACHER_CACHE.md.
"""

from segkd.cache.fingerprint import CacheMismatchError
from segkd.cache.store import CacheDamagedError, CacheIncompleteError, TeacherCache

__all__ = ["CacheDamagedError", "CacheIncompleteError", "CacheMismatchError", "TeacherCache"]
