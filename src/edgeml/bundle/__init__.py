"""Signed model bundles: keys, manifests, content-addressed blobs, channel pointers, verification.

Verification (:mod:`.verify`, :mod:`.channels`, :mod:`.keys`, :mod:`.manifest`) imports nothing
heavy: the edge agent uses it as is. Building and publishing (:mod:`.build`, :mod:`.rollout`)
run on the appliance.
"""
