// Command etcd is etcd's own server entry point, built at the version kube-apiserver is
// tested with, because Debian's etcd-server is older than the API server supports.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
