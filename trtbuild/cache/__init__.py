"""The content-addressed cache: blobs and action entries (`store`, one owner for the on-disk
layout in `layout`), the Bazel HTTP remote cache behind it (`remote`), atomic writes (`atomic`)
and digests with a stat memo (`digests`).

May import: trtbuild.errors, trtbuild.recipe.
"""
