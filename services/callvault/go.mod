module github.com/callvault/callvault/services/callvault

go 1.26

replace (
	github.com/callvault/callvault/proto => ../../proto
	github.com/callvault/callvault/pkg => ../../pkg
)
