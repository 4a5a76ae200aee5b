"""Read backends for the attention array: tensorstore when it can open the store, zarr-python otherwise.

One query row of one image is one stored chunk (`[layer, head, key]` fp16, blosc-compressed) inside
one shard per image. Both backends return the stored fp16 values, rows first:

    reader = open_reader("store.zarr")                 # backend chosen once per open (`choice`)
    reader.read_rows(image, [3, 17])                   # [row, layer, head, key] float16
    reader.read_image_rows(image, slice(0, 40))        # a row block (or the whole shard)

base                the reader interface (`AttentionReader`) and the missing-row checks it applies
zarr_reader         zarr-python: every store and storage option fsspec understands; always used to write.
tensorstore_reader  tensorstore key-value stores (file, http, s3, zip: local or remote) fetch the shard
                    index and the chunk bytes; the chunks are decoded with numcodecs' blosc straight into
                    the output, concurrently. Decoding through tensorstore's own zarr3 driver measured
                    ~0.4 GB/s per core against ~0.9 GB/s for numcodecs (the codec the writer uses), so
                    only the I/O goes through tensorstore (`benchmarks/bench_read.py` prints both).
choice              the choice: the `backend` argument, else the ATTNSTORE_READ_BACKEND environment
                    variable, else "auto" (tensorstore when it can open the store, zarr otherwise, with
                    the reason kept in `reader.detail`).
lazy                the "auto" reader of a store Dataset, opened on its first attention read.

`attnstore.store.xarray_glue.attach` puts a reader behind the `attention` variable of an xarray
Dataset, so every lazy slice of it (`ds.attention.isel(...)`, dask chunks) reads through the reader.
"""
