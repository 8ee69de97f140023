"""Commands that write a shard set by ranks: the shared run skeleton and `pack`.

Owns resumability (what a rerun finds and may continue), ranks and their
manifests, the per-sample failure record and the summary (`shardrun`), and
`pack` (folder datasets and shard sets into restart-marker shards). `csst
label` (csst_train.label) runs on the same skeleton. It may import every other
package of csst_data.
"""
