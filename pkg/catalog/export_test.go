package catalog

// ClaimID exposes admission's id claim to the package's tests.
var ClaimID = (*Catalog).claimID
