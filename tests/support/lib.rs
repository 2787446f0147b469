//! Test support: upstream servers, clients and a gateway harness for end-to-end tests.
