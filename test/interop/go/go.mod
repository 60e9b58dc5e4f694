module fleetguard.test/x509interop

go 1.26
