# The Vault policy of the token Shironzi's processes use (VAULT_TOKEN): tenant keys live in the KV v2 engine
# mounted at `secret`, under shironzi/tenant-keys/<tenant>. Creating a key is a check-and-set write (cas=0), so
# two hosts never hand out different keys for one tenant; destroying one (crypto-shredding) deletes its
# metadata and every version, then writes a tombstone.
path "secret/data/shironzi/*" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/shironzi/*" {
  capabilities = ["delete"]
}
