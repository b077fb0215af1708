package secretmanager_test

import (
	"context"

	sm "cloud.google.com/go/secretmanager/apiv1"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

// rawClient is the official client pointed at the fake, as an unrelated
// tool (or LiteLLM) would use it.
func rawClient(fake *smfake.Server) *sm.Client {
	c, err := sm.NewClient(context.Background(), option.WithEndpoint(fake.Addr()), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		panic(err)
	}
	return c
}
