"""Commands that write a shard set by ranks: the shared run skeleton and `pack`.

Owns the run skeleton (`skeleton`: the lock, resumability, rank start and
finish, the writer, failures and the summary), the files a ranked run leaves
(`shardrun`: ranks, their manifests and done markers, the merge, failed.jsonl),
`background` (samples encoded in threads and written in order, for `csst
label`) and `pack` (folder datasets and shard sets into restart-marker shards). `csst
label` (csst_train.label) runs on the same skeleton. It may import every other
package of csst_data.
"""
