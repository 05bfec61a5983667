package broadcast

import (
	"context"

	"github.com/walcast/walcast/schema"
)

// LoadState implements StateStore.
func (b *MemoryBus) LoadState(ctx context.Context, at schema.Position, tables []string,
	rows func(yield func(batch []schema.Message) error) error) error {
	return errStateNotImplemented
}

// StateInfo implements StateStore.
func (b *MemoryBus) StateInfo(ctx context.Context) (StateStatus, error) {
	return StateStatus{}, errStateNotImplemented
}

// ReadState implements StateStore.
func (b *MemoryBus) ReadState(ctx context.Context, tables []string, n int,
	fn func(batch []StateRow) error) (schema.Position, error) {
	return schema.Position{}, errStateNotImplemented
}
