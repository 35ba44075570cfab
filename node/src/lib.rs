//! The `ferry` command's library: transport, enrolment, bundles and the local
//! API. Being built (issue 4).
