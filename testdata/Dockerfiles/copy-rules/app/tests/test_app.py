print('test')
